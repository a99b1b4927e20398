"""The benchmark hooks' full-size architectures match the published checkpoints (built on the meta device)."""

from __future__ import annotations

import pytest

from app.models.backends.audiocraft import MUSICGEN_MELODY
from app.models.backends.jukebox import MelodyStyleTransfer
from app.models.backends.musicgen import (
    MUSICGEN_WEIGHTS,
    TransformersMusicGen,
    full_size_musicgen_config,
)
from app.models.backends.stable_audio import STABLE_AUDIO_OPEN, DiffusersStableAudio

torch = pytest.importorskip("torch")


def _fp32_bytes(module) -> int:
    return sum(p.numel() for p in module.parameters()) * 4


@pytest.mark.parametrize(
    ("variant", "spec"),
    [
        ("small", MUSICGEN_WEIGHTS[0]),
        ("medium", MUSICGEN_WEIGHTS[1]),
        ("large", MUSICGEN_WEIGHTS[2]),
        ("melody", MUSICGEN_MELODY),
    ],
)
def test_musicgen_architectures_match_weight_sizes(variant: str, spec) -> None:
    from transformers import (
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    cls = (
        MusicgenMelodyForConditionalGeneration
        if variant == "melody"
        else MusicgenForConditionalGeneration
    )
    with torch.device("meta"):
        model = cls(full_size_musicgen_config(variant))
    assert _fp32_bytes(model) == pytest.approx(spec.size_bytes, rel=0.05)


def test_stable_audio_architecture_matches_weight_size() -> None:
    from diffusers import AutoencoderOobleck, StableAudioDiTModel
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        parts = [
            StableAudioDiTModel(),
            AutoencoderOobleck(),
            T5EncoderModel(
                T5Config(
                    vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12
                )
            ),
        ]
    assert sum(_fp32_bytes(p) for p in parts) == pytest.approx(
        STABLE_AUDIO_OPEN.size_bytes, rel=0.05
    )


def test_hooks_are_lazy_callables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a hook builds nothing: the model is made on the first call (on the benchmark's device)."""
    import inspect

    built: list[str] = []
    module_init = torch.nn.Module.__init__

    def counting_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        built.append(type(self).__name__)
        module_init(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", counting_init)
    hooks = (
        TransformersMusicGen.random_full_size("small"),
        DiffusersStableAudio.random_full_size(),
        MelodyStyleTransfer.random_full_size(),
    )
    assert built == []  # not one torch module made yet
    for hook in hooks:  # the benchmark calls bench(device, duration_s[, ...defaults])
        params = list(inspect.signature(hook).parameters.values())
        assert [p.name for p in params[:2]] == ["device", "duration_s"]
        assert all(p.default is not inspect.Parameter.empty for p in params[2:])
    with pytest.raises(Exception, match="unknown MusicGen variant"):
        full_size_musicgen_config("huge")
