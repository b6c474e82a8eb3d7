"""User regexes: RE2 (linear time, so no pattern can hang a checker), one set of options.

Validation (`url add`, assertions) and checking compile through the very same function.
"""

import functools

import re2

REGEX_MAX_MEM = 8 << 20          # RE2's program memory budget for one user regex


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str):
    """Compile a user regex with RE2.

    Cached because checkers run the same few patterns over and over. Raises re2.error.
    """
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False      # RE2 would print to stderr; callers say why themselves
    return re2.compile(pattern, options)
