"""What to do about each failed audit check: the audit's vocabulary, a data module.

The audit stage names these fixes when it stops a run; the report quotes them beside the
findings of ``audit.json``. Kept apart from the stage so that the report reads the audit's
words without importing the audit stage.
"""

FIXES = {
    "group_overlap": "keep every recording (and, for a new-subject estimate, every subject/device) in one split: "
                     "use [split] strategy 'group' and remove splits.json to re-split",
    "cross_split_duplicates": "remove the duplicated samples from the dataset (keep one copy) and re-split",
    "near_duplicates": "look at the listed pairs; remove re-uploads and near copies, then re-split",
    "shared_segments": "put every cut of a recording in one split (with a predefined test split: move the listed "
                       "training samples to the testing category, or delete them), then remove splits.json; "
                       "without [split] strict the pipeline quarantines them itself",
    "window_overlap": "keep each recording in one split (strategy 'group' or 'time'), never window before splitting",
    "temporal_order": "use [split] strategy 'time' with a gap_s that covers the window length",
    "missing_classes": "add data for the missing classes, or lower [split] test_size/val_size",
    "non_finite": "remove or repair the windows with NaN/inf values",
    "permutation_test": "a model beats chance on shuffled labels: the splitter or the features leak across folds",
}
