"""Regenerate config.example.yaml from sitewatch.config.SETTINGS (run after adding a setting).

    python tools/gen_config_example.py > config.example.yaml
"""

import textwrap

from sitewatch.config import ENV_ALIASES, SECTIONS, SETTINGS

alias = {f"{section}.{key}": var for var, (section, key) in ENV_ALIASES.items()}
out = ["# sitewatch configuration: every key, with its default.",
       "# Use it with `sitewatch --config PATH`, $SITEWATCH_CONFIG, or as ./sitewatch.yaml.",
       "# Precedence: defaults < this file < environment < command-line flags.",
       "# Every key can also be set as SITEWATCH_<SECTION>__<KEY>, e.g. SITEWATCH_CONSUMER__CONCURRENCY=50.",
       "# `sitewatch config show` prints the effective values and where each comes from.",
       "#",
       "# A monitor's options are not configuration: name, method, headers, body, json, bearer,",
       "# client-cert, client-key, ip-version, assert and degraded, and each kind's own (send, expect,",
       "# cron, tz, grace) are given to `url add`/`url update`, or as keys of `url import`/`apply`",
       "# entries (README \"Requests\", \"Assertions\", \"Monitor kinds\"). ${VAR} in a header, the bearer",
       "# or the body is read from the environment of the host running the checks. E.g. an import file:",
       "#   - url: https://api.example.com/graphql",
       "#     name: users-query",
       "#     method: POST",
       "#     bearer: ${API_TOKEN}",
       "#     json: '{\"query\": \"{ users(first: 1) { id } }\"}'",
       "#     assert: ['json $.data.users[0].id != null']",
       "#     degraded: ['response_time < 800']",
       "#   - url: tcp://cache.internal:6379",
       "#     send: 'PING\\r\\n'",
       "#     expect: '^\\+PONG'",
       "#   - url: tls://mail.example.com:993",
       "#     assert: cert_days > 14",
       "#   - url: dns:///www.example.com",
       "#     assert: answer contains \"192.0.2.10\"",
       "#   - url: icmp://gw.office.example.com",
       "#     assert: loss == 0",
       "#   - url: push://nightly-backup",
       "#     cron: 0 3 * * *",
       "#     tz: Europe/Berlin",
       "#     grace: 1800", ""]
for section in [""] + SECTIONS:     # "": top-level settings (`region`), before the sections
    indent = "  " if section else ""
    if section:
        out.append(f"{section}:")
    for s in SETTINGS:
        if s.section != section:
            continue
        note = f"{s.help} Env: {s.env_var}" + (f" (or {alias[s.name]})" if s.name in alias else "") + "."
        out.extend(f"{indent}# {line}" for line in textwrap.wrap(note, 96))
        value = s.default
        shown = "null" if value is None else "true" if value is True else "false" if value is False else value
        if isinstance(value, str):
            shown = f'"{value}"'
        out.append(f"{indent}{s.key}: {shown}")
    out.append("")
print("\n".join(out), end="")
