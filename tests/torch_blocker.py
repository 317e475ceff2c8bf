"""The head of a child-process script in which torch cannot be imported (the runtime and serve tests).

The hook refuses and records in ``attempts`` every import of torch, transformers, diffusers or genrt.sdk,
so a module that catches the ImportError still shows up in the child's report.
"""

import textwrap

TORCH_BLOCKER = textwrap.dedent("""
    import importlib, json, pkgutil, sys

    BLOCKED = ("torch", "transformers", "diffusers", "genrt.sdk")
    attempts = []

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                attempts.append(name)
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
""")
