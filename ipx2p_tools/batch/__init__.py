"""Batch editing: the host-independent parts of the batch runner (manifest reading, the resumable results journal,
the results table and a dependency-free Parquet writer/reader). No ComfyUI, torch or ray imports live here, so these
modules load and test anywhere; the runner's command line and engines build on them.
"""
