"""Apply an approved model to new studies: whole-image masks on each input's own grid as NIfTI,
and for DICOM input a DICOM SEG that references the source instances.

Modules: :mod:`.inputs` (NIfTI files and DICOM series folders, read with ingest's own header
checks and geometry), :mod:`.seg` (the SEG, written with highdicom), :mod:`.models` (which model:
a registered version, its champion by default, or a package folder), :mod:`.run` (one input → its
outputs, bad inputs reported and skipped).
"""
