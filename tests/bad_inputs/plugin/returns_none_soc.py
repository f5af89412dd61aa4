# expect: 2 odimo_register_strategies returned NoneType, expected Strategy
from odimo_moo import hookimpl


@hookimpl
def odimo_register_strategies():
    return [None]
