"""Test-only: tiny torch stand-ins for each family's components, exported into export folders.

The modules have the I/O of docs/contracts.md at toy sizes, so the runtime pipelines can be run end to end in
milliseconds and compared with a torch loop on the same modules: ``ldm``, ``vqgan`` and ``imagen`` hold one
family each (modules, ``build_<family>(root)`` folder writer, torch reference); ``common`` the sizes, seeding
and helpers they share; ``exports`` the ONNX export, manifest and tokenizer writers.
"""
