"""Image datasets on disk: ``inspect`` says what a folder holds, ``prepare`` makes train/ + val/ from it.

Named ``dataset`` (not ``data``) so it never shadows ``jitmodel.data``, the trainer's loaders.
"""
