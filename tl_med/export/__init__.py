"""Export an approved model as a MONAI bundle (:mod:`.bundle`)."""
