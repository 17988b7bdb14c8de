#!/usr/bin/env python3
"""Lists import cycles between the modules (files) of a crate's src/ directory.

A module "imports" another when its code names it through `crate::a::b` or `super::x` paths
(in `use` items or inline). Cycles of any length are reported, one per line, e.g.
`config -> shadow::policy -> config`. Exit code 1 when there is a cycle.
Usage: scripts/module-cycles.py gateway/src cdc-sync/src extracted/kit/src
Why our own: cargo-modules would do it, but it is a large build; this is 80 lines of regex that
only needs to understand paths, not types.
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            mods[tuple(rel)] = os.path.join(root, f)
    return mods


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    # unit tests may import anything of their parent
    return re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]


def resolve(mods, path):
    """Longest prefix of `path` that is a module."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return ()


def reexports(mods, texts):
    """(module, item name) -> the module it is defined in, from `pub use child::{..}` items."""
    out = {}
    for m, text in texts.items():
        for base, inner in re.findall(r"pub(?:\([^)]*\))?\s+use\s+((?:self::|crate::|super::)?\w+(?:::\w+)*)::\{([^{}]*)\}", text):
            for item in inner.split(","):
                item = item.strip().split(" as ")[-1].strip()
                if item and item != "self":
                    out[(m, item)] = base
        for base, item in re.findall(r"pub(?:\([^)]*\))?\s+use\s+((?:self::|crate::|super::)?\w+(?:::\w+)*)::(\w+)\s*;", text):
            out[(m, item)] = base
    return out


def absolute(mods, m, parts):
    """Module path named by `parts` (a path as written in module `m`), or None if external."""
    if parts[0] == "crate":
        return parts[1:]
    if parts[0] == "self":
        return list(m) + parts[1:]
    if parts[0] == "super":
        return list(m[:-1]) + parts[1:]
    if tuple(list(m) + [parts[0]]) in mods:  # a child module named without `self::`
        return list(m) + parts
    return None


def edges(mods):
    texts = {m: strip(open(f, encoding="utf-8").read()) for m, f in mods.items()}
    rex = reexports(mods, texts)
    out = {m: set() for m in mods}

    def target(m, path, depth=0):
        t = resolve(mods, path)
        rest = path[len(t):]
        if rest and (t, rest[0]) in rex and depth < 8:
            p = absolute(mods, t, rex[(t, rest[0])].split("::"))
            if p is not None:
                return target(t, p + rest[1:], depth + 1)
        return t

    for m, text in texts.items():
        body = text
        for base, inner in re.findall(r"\b((?:crate|super|self)(?:::\w+)*|\w+(?:::\w+)*)::\{([^{}]*)\}", text):
            for item in inner.split(","):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self":
                    body += f" use {base}::{item}; "
        paths = re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", body)
        paths += re.findall(r"\buse\s+(\w+(?:::\w+)+)", body)
        for p in paths:
            path = absolute(mods, m, p.split("::"))
            if path is None:
                continue
            t = target(m, path)
            if t != m and t != ():
                # a child re-exported by its parent is not a cycle
                if len(t) > len(m) and t[: len(m)] == m and re.search(r"pub(?:\([^)]*\))?\s+use\s+(?:self::)?" + t[len(m)], text):
                    pass
                out[m].add(t)
    return out


def name(m):
    return "::".join(m) or "crate"


def cycles(graph):
    found, seen = [], set()
    def dfs(node, stack):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cyc = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    found.append(cyc)
            elif len(stack) < 12:
                dfs(nxt, stack + [nxt])
    for start in sorted(graph):
        dfs(start, [start])
    return found


def main():
    bad = False
    for src in sys.argv[1:] or ["src"]:
        mods = modules(src)
        graph = edges(mods)
        # the crate root declares every module; it is not an import
        for m in graph:
            graph[m].discard(())
        graph[()] = set()
        for c in cycles(graph):
            bad = True
            print(f"{src}: " + " -> ".join(name(x) for x in c))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
