"""Curation: score every image text out-of-fold, decide keep/drop, measure the decisions.

Scorers. A text is judged by a model that never trained on it: the images are split into folds by
`tasks.model.folds.fold_of`, the fold-k model was trained on every fold but k, so it scores the texts of
fold k. Texts added after the models were trained (absent from the training snapshot) are scored by
the model trained on everything (fold -1) when there is one. The scorer kinds are `transformer`
(the fine-tuned classifier), `baseline` (TF-IDF + linear), `frozen` and `similarity` (heads on a
sentence encoder) and `ensemble` (a weighted average of the kinds' probabilities, each calibrated by
one temperature fitted on held-out folds so they are comparable). An ensemble is a row in
`ensembles`; its id is what `text_scores.model_id` holds.

Policy. `tasks.curate.policy` decides keep/drop and gives every drop a reason. A junk mark from harvesting
(camera file name, boilerplate, ...) is evidence, not a verdict. With a labelled set (JSONL of
`{text_id, relevant}`), `min_p_true` can be chosen as the lowest threshold whose kept texts reach a
target precision.

Scores are written in Arrow batches as they come (one warehouse transaction each, anti-joined on
(text_id, model_id)), so a killed run resumes where it stopped and a re-run never adds a row.

Modules: `plan` (which model scores which text), `scorers` (the scorer kinds behind one interface),
`score` (scoring pending texts in chunks), `calibration` (temperatures, ensemble weights, held-out
evidence), `masked` (the masked-class-name evaluation), `store` (warehouse reads and writes),
`policy` (the relative per-class keep/drop policy and the reason of every drop),
`decisions` (the policy applied, reasons, per-class counts), `labels` (labelled relevance: metrics,
PR curve, threshold choice) and `summary` (what a curation reports and records).
"""
