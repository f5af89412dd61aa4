"""The file formats an exported network is written in, declared once and without torch: what
:mod:`odimo_moo.artifacts` writes and ``odimo export --format`` offers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    """One file format of an exported network: its file name, artifact key, and what it needs."""

    name: str
    file: str
    key: str
    needs: str | None = None


#: Every export format by name, in the order a run writes them.
EXPORT_FORMATS = {f.name: f for f in (
    ExportFormat("state-dict", "exported_state_dict.pt", "exported_state_dict"),
    ExportFormat("torch-export", "exported.pt2", "exported_program"),
    ExportFormat("onnx-float", "exported.onnx", "exported_onnx", needs="onnx"),
    ExportFormat("onnx-qdq", "exported_qdq.onnx", "exported_qdq_onnx", needs="onnx"),
)}
