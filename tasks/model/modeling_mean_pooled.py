"""Sequence classification with a mean-pooled head over any encoder transformers knows (BERT, RoBERTa, ...).

This file is self-contained on purpose: it imports only the standard library, torch and transformers,
because `save_pretrained` copies it beside the weights of every mean-pooled imtext classifier. There
`config.json` names it in `auto_map`, so a process that has never seen imtext loads the model with

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

transformers has no BERT-family head that averages token states (its mean-pooling heads belong to
other architectures, such as ModernBERT, whose weights a BERT or RoBERTa checkpoint cannot fill), hence
this code. Each encoder gets its own pair of classes, built on first use and named after it:
`MeanPooledRobertaConfig` / `MeanPooledRobertaForSequenceClassification` for RoBERTa,
`MeanPooledBertConfig` / `MeanPooledBertForSequenceClassification` for BERT (MiniLM), and so on. The
config has its own `model_type` (`mean-pooled-<encoder type>`), so loading without
`trust_remote_code=True` stops with an error instead of silently putting a random first-token head on
the encoder. The weights keep the encoder's usual key prefix (`roberta.`, `bert.`, ...) and the head is
`classifier.weight`/`classifier.bias`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

MODEL_TYPE_PREFIX = "mean-pooled-"
_CLASS_NAME = re.compile(r"^MeanPooled(?P<stem>\w+?)(?P<kind>Config|ForSequenceClassification)$")
_BUILT: dict[str, tuple[type, type]] = {}  # encoder model type -> (config class, model class)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where the attention mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def encoder_type(model_type: str) -> str:
    """The encoder's model type behind a mean-pooled one (`mean-pooled-roberta` -> `roberta`); others unchanged."""
    return model_type.removeprefix(MODEL_TYPE_PREFIX)


def mean_pooled_classes(model_type: str) -> tuple[type, type]:
    """(config class, model class) of the mean-pooled classifier over the encoder of `model_type`."""
    from transformers import CONFIG_MAPPING, MODEL_MAPPING

    base_type = encoder_type(model_type)
    if base_type in _BUILT:
        return _BUILT[base_type]
    try:
        base_config = CONFIG_MAPPING[base_type]
        encoder_cls = MODEL_MAPPING[base_config]
    except KeyError:
        raise ValueError(f"transformers knows no encoder model of type {base_type!r}") from None
    pretrained_base = next(c for c in encoder_cls.__mro__[1:] if getattr(c, "base_model_prefix", ""))
    prefix = pretrained_base.base_model_prefix
    stem = encoder_cls.__name__.removesuffix("Model")
    takes_pooling_flag = "add_pooling_layer" in encoder_cls.__init__.__code__.co_varnames

    config_cls = type(
        f"MeanPooled{stem}Config",
        (base_config,),
        {
            "model_type": MODEL_TYPE_PREFIX + base_type,
            "_auto_class": "AutoConfig",
            "__module__": __name__,
            "__doc__": f"The configuration of {base_config.__name__}, for the mean-pooled classifier.",
        },
    )

    def __init__(self, config):
        pretrained_base.__init__(self, config)
        self.num_labels = config.num_labels
        encoder = encoder_cls(config, add_pooling_layer=False) if takes_pooling_flag else encoder_cls(config)
        setattr(self, prefix, encoder)
        dropout = getattr(config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs.pop("return_dict", None)
        out = getattr(self, prefix)(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = mean_pool(out.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    model_cls = type(
        f"MeanPooled{stem}ForSequenceClassification",
        (pretrained_base,),
        {
            "__init__": __init__,
            "forward": forward,
            "config_class": config_cls,
            "_auto_class": "AutoModelForSequenceClassification",
            "__module__": __name__,
            "__doc__": f"{encoder_cls.__name__} with the mean of its token states fed to a linear classifier.",
        },
    )
    _BUILT[base_type] = (config_cls, model_cls)
    return config_cls, model_cls


def mean_pooled_config(config):
    """The mean-pooled counterpart of an encoder's config (same fields, labels and extra attributes)."""
    config_cls, _ = mean_pooled_classes(config.model_type)
    if isinstance(config, config_cls):
        return config
    values = config.to_dict()
    for key in ("model_type", "auto_map", "architectures", "transformers_version"):
        values.pop(key, None)
    return config_cls.from_dict(values)


def _stem_types() -> dict[str, str]:
    """Class-name stem (`Roberta`, `Bert`, `XLMRoberta`, ...) -> encoder model type."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return {
        name.removesuffix("Model"): model_type
        for model_type, name in MODEL_MAPPING_NAMES.items()
        if isinstance(name, str) and name.endswith("Model")
    }


def __getattr__(name: str):
    # `auto_map` names the classes (`modeling_mean_pooled.MeanPooledRobertaForSequenceClassification`);
    # they are built here when transformers looks them up.
    match = _CLASS_NAME.match(name)
    base_type = _stem_types().get(match["stem"]) if match else None
    if base_type is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    config_cls, model_cls = mean_pooled_classes(base_type)
    return config_cls if match["kind"] == "Config" else model_cls
