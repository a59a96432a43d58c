"""Print kpipe's module import graph (module-level and function-level imports: an import hidden inside a
function still couples the modules) and every cycle. Exit 1 when there is a cycle.

    python3 scripts/import_graph.py [kpipe]
"""
import ast
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "kpipe").resolve()
top = root.name


def module_name(p: pathlib.Path) -> str:
    parts = list(p.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


mods = {module_name(p): p for p in root.rglob("*.py")}
graph = {}
for name, p in mods.items():
    package = name.split(".")[:-1] if not p.name == "__init__.py" else name.split(".")
    deps = set()
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            elif node.module and node.module.split(".")[0] == top:
                base, node_module = [], node.module.split(".", 1)[1] if "." in node.module else ""
                node = ast.ImportFrom(module=node_module or None, names=node.names, level=0)
            else:
                continue
            target = base + (node.module.split(".") if node.module else [])
            for a in node.names:            # `from ..build import kernel`: the module kernel, not the package
                sub = ".".join(target + [a.name])
                deps.add(sub if sub in mods or not target else ".".join(target))
    graph[name] = sorted(d for d in deps if d in mods and d != name)
for k in sorted(graph):
    print(f"{k}: {', '.join(graph[k])}")
cycles = set()


def dfs(n, path):
    for d in graph.get(n, []):
        if d in path:
            cyc = path[path.index(d):]
            i = cyc.index(min(cyc))
            cycles.add(tuple(cyc[i:] + cyc[:i]))
        elif len(path) < 12:
            dfs(d, path + [d])


for n in graph:
    dfs(n, [n])
print("cycles:", sorted(cycles) or "none")
sys.exit(1 if cycles else 0)
