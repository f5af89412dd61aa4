"""The search's lambda ramp: linear from lambda/100, reaching lambda, never above it."""

from hypothesis import given, settings
from hypothesis import strategies as st

from odimo_moo.recipe import Recipe


@settings(max_examples=300, deadline=None)
@given(epochs=st.integers(0, 60), ramp=st.floats(0.0, 1.0), weight=st.floats(1e-9, 1e3))
def test_lambda_ramp_is_monotone_and_never_overshoots(epochs: int, ramp: float, weight: float) -> None:
    recipe = Recipe(search_epochs=epochs, lambda_ramp=ramp, lambda_=weight)
    values = [recipe.lambda_at(epoch) for epoch in range(epochs)]
    assert all(v <= weight * (1 + 1e-12) for v in values)
    assert all(a <= b * (1 + 1e-12) for a, b in zip(values, values[1:]))
    if values:
        assert values[0] == weight / 100 or ramp * epochs <= 0
        assert values[-1] == weight or ramp * epochs > epochs - 1


def test_quickstart_ramp_of_three_epochs_stays_below_lambda() -> None:
    # search_epochs=3, ramp 1.5 epochs: the old formula trained epoch 2 at about twice lambda.
    recipe = Recipe(search_epochs=3, lambda_ramp=0.5, lambda_=2.29e-5)
    assert [recipe.lambda_at(e) for e in range(3)] == [2.29e-7, 2.29e-7 + (2.29e-5 - 2.29e-7) / 1.5, 2.29e-5]


def test_no_ramp_gives_lambda_from_the_first_epoch() -> None:
    recipe = Recipe(search_epochs=4, lambda_ramp=0.0, lambda_=0.5)
    assert [recipe.lambda_at(e) for e in range(4)] == [0.5] * 4
