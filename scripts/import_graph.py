"""Print kpipe's module import graph (module-level and function-level imports: an import hidden inside a
function still couples the modules) and every cycle. Exit 1 when there is a cycle.

    python3 scripts/import_graph.py [kpipe]
"""
import ast
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "kpipe")
mods = {p.stem if p.name != "__init__.py" else p.parent.name: p for p in root.rglob("*.py")}
graph = {}
for name, p in mods.items():
    deps = set()
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            if node.module:
                deps.add(node.module.split(".")[0])
            else:
                deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kpipe."):
            deps.add(node.module.split(".")[1])
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
