"""Print the README's configuration table from pully_tornado.settings.OPTIONS (one source)."""

from pully_tornado.settings import OPTIONS

print("| variable | flag | default | meaning |")
print("|---|---|---|---|")
for o in OPTIONS:
    default = f"`{o.default}`" if o.default != "" else "unset"
    flag = "`--uvloop/--no-uvloop`" if o.field == "uvloop" else f"`{o.flag}`"
    print(f"| `{o.env}` | {flag} | {default} | {o.help} |")
