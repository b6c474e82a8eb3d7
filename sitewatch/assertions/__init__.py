"""Assertions: what "up" means for a check, in the expression language of DESIGN.md section 12.

grammar.py parses and validates an expression (at `url add`/`import` time and, cached, when a
check is judged); evaluate.py judges parsed expressions against one response.
"""

from .evaluate import Verdict, evaluate, explain, judge
from .grammar import Assertion, AssertionSyntaxError, parse, parse_all

__all__ = ["Assertion", "AssertionSyntaxError", "Verdict", "evaluate", "explain", "judge", "parse", "parse_all"]
