"""Training the text→class classifier: data from one snapshot, folds by image, fine-tuning, the registry.

Data. Every image text (without a junk mark: junk texts are noise labels by construction; curation
still scores them) is labelled with its image's class; class texts (WordNet glosses, Wikipedia
summaries, description files) are extra training examples in every fold and never held out. The
classes are those with at least one image text, in the standard ImageNet order. Everything is read at
one pinned snapshot (`AT (VERSION => n)`), which each model row records.

Cross-fitting. Images are split into K folds by `tasks.model.folds.group_folds` (twins share a fold), never by
text, so no image is on both sides. The model of fold k is trained on every other fold and judges
fold k; one more model (fold -1) is trained on everything for new texts.

Fine-tuning. transformers' `Trainer` runs the steps, given the platform's parts: pre-tokenised texts
in length-grouped batches padded to their own longest text, AdamW with warmup and linear decay and a
separate (higher) learning rate for the new head, bf16 autocast on CUDA, gradient accumulation and
clipping, evaluation each epoch (top-1, top-5, macro-F1 on a sample of the held-out split), early
stopping on macro-F1 with the best epoch restored, and resumable checkpoints (`resume_from_checkpoint`).
On CPU the same seed gives the same metrics, resumed or not. Under `torchrun`/`accelerate launch` every
process trains on its share of the batches (DistributedDataParallel) and only the first one writes.

Modules: `options` (the run's options, declared once for the flow and the CLI), `data` (texts, labels
and folds of one snapshot; the folds recorded per run), `training` (`TrainConfig` and fine-tuning
on `Trainer`), `devices` (this process's place in a multi-process launch), `evaluation` (held-out
measures and scoring speed), `registry` (model ids, finished model folders, the `models`,
`training_history` and `training_runs` rows), `fits` (one model per fold: the transformer and the
baseline), `steps` (the train flow's steps and its Prefect tasks), `folds` (cross-fitting folds: images
sharing a pasted description share a fold), `kept` (a repeated run with nothing
changed keeps the last one), `classifier` (building, saving, loading and running the
transformer classifier), `modeling_mean_pooled` (the mean-pooled head; imports nothing from imtext, as
it is copied beside the weights so plain transformers loads a saved model), `baseline` (the TF-IDF +
linear SVM baseline, pickled with joblib), `encoders` (the frozen-encoder and class-similarity
scorers on a sentence encoder) and `card` (the `README.md` of every model folder).
"""
