"""kresume.formats: which file/folder is one checkpoint, and is it complete (pure core).

Modules: ``listing`` (scan without following links), ``units`` (pure: listing → units and aliases),
``checks`` (cheap content checks of one fd), ``peek`` (inert pickle reading), ``judge`` (per-format
completeness), ``safeopen`` (open beneath a root, never leaving it), ``verdicts``; ``metadata`` (the
lead's: step/epoch/format of a checkpoint).
"""
