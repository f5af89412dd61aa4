# expect: 2 failed to import: SyntaxError
from odimo_moo import hookimpl

def odimo_register_socs(:
    return []
