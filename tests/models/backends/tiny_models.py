"""Tiny random-initialised models built with the real upstream config classes.

Each builder saves a checkpoint folder laid out exactly like the Hugging Face repo it
stands in for (``config.json``, weights, tokenizer, processor), so the backends load
it through the same ``from_pretrained`` code path real weights take.  Torch and
transformers are imported inside the functions: this module is only imported by the
backend tests, which run in a process that may use torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

TINY_SAMPLE_RATE = 8000
#: Encodec hop = prod(upsampling_ratios) = 160 samples -> 50 frames per second at 8 kHz.
TINY_UPSAMPLING = [5, 4, 4, 2]
TINY_CODEBOOK_SIZE = 32
TINY_CODEBOOKS = 2

_WORDS = (
    "warm lo fi piano rock jazz funk drum drums bass guitar in the a of key bpm major minor beat "
    "music song electronic ambient style with at loop"
).split()


def tiny_t5_tokenizer():  # type: ignore[no-untyped-def]
    """A unigram T5 tokenizer built offline from a small word list (no sentencepiece model)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in _WORDS]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG#,.-"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=128)


def _tiny_t5_config(vocab_size: int):  # type: ignore[no-untyped-def]
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)


def _tiny_encodec_config():  # type: ignore[no-untyped-def]
    from transformers import EncodecConfig

    hop = 1
    for r in TINY_UPSAMPLING:
        hop *= r
    frame_rate = TINY_SAMPLE_RATE // hop
    # num_quantizers = 1000 * bandwidth // (frame_rate * log2(codebook_size)); solve for TINY_CODEBOOKS.
    bandwidth_kbps = TINY_CODEBOOKS * frame_rate * math.log2(TINY_CODEBOOK_SIZE) / 1000
    return EncodecConfig(
        sampling_rate=TINY_SAMPLE_RATE,
        audio_channels=1,
        target_bandwidths=[bandwidth_kbps],
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=TINY_UPSAMPLING,
        codebook_size=TINY_CODEBOOK_SIZE,
        codebook_dim=16,
        num_lstm_layers=1,
        normalize=False,
        use_causal_conv=False,
        chunk_length_s=None,
        overlap=None,
    )


def build_encodec(folder: Path) -> Path:
    """Tiny EncodecModel + feature extractor in ``folder`` (stands in for facebook/encodec_32khz)."""
    import torch
    from transformers import EncodecFeatureExtractor, EncodecModel

    torch.manual_seed(0)
    model = EncodecModel(_tiny_encodec_config()).eval()
    model.save_pretrained(folder)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=TINY_SAMPLE_RATE).save_pretrained(folder)
    return folder


def build_musicgen(folder: Path) -> Path:
    """Tiny MusicgenForConditionalGeneration + MusicgenProcessor (stands in for facebook/musicgen-*)."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    torch.manual_seed(0)
    tok = tiny_t5_tokenizer()
    decoder = MusicgenDecoderConfig(
        vocab_size=TINY_CODEBOOK_SIZE,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        num_codebooks=TINY_CODEBOOKS,
        max_position_embeddings=512,
        pad_token_id=TINY_CODEBOOK_SIZE,
        bos_token_id=TINY_CODEBOOK_SIZE,
        decoder_start_token_id=TINY_CODEBOOK_SIZE,
    )
    config = MusicgenConfig(
        text_encoder=_tiny_t5_config(len(tok)).to_dict(),
        audio_encoder=_tiny_encodec_config().to_dict(),
        decoder=decoder.to_dict(),
    )
    model = MusicgenForConditionalGeneration(config).eval()
    model.generation_config.decoder_start_token_id = TINY_CODEBOOK_SIZE
    model.generation_config.pad_token_id = TINY_CODEBOOK_SIZE
    model.generation_config.do_sample = True
    model.generation_config.guidance_scale = 3.0
    model.generation_config.max_length = 1500
    model.save_pretrained(folder)
    fe = EncodecFeatureExtractor(feature_size=1, sampling_rate=TINY_SAMPLE_RATE)
    MusicgenProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return folder


def build_musicgen_melody(folder: Path) -> Path:
    """Tiny MusicgenMelodyForConditionalGeneration + processor (stands in for facebook/musicgen-melody)."""
    import torch
    from transformers import (
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
    )

    torch.manual_seed(0)
    tok = tiny_t5_tokenizer()
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=TINY_CODEBOOK_SIZE,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        num_codebooks=TINY_CODEBOOKS,
        max_position_embeddings=1024,
        pad_token_id=TINY_CODEBOOK_SIZE,
        bos_token_id=TINY_CODEBOOK_SIZE,
        decoder_start_token_id=TINY_CODEBOOK_SIZE,
    )
    config = MusicgenMelodyConfig(
        text_encoder=_tiny_t5_config(len(tok)).to_dict(),
        audio_encoder=_tiny_encodec_config().to_dict(),
        decoder=decoder.to_dict(),
        num_chroma=12,
    )
    model = MusicgenMelodyForConditionalGeneration(config).eval()
    model.generation_config.decoder_start_token_id = TINY_CODEBOOK_SIZE
    model.generation_config.pad_token_id = TINY_CODEBOOK_SIZE
    model.generation_config.do_sample = True
    model.generation_config.guidance_scale = 3.0
    model.generation_config.max_length = 1500
    model.save_pretrained(folder)
    # MusicgenMelodyFeatureExtractor cannot be instantiated without torchaudio (no build for
    # torch 2.13), so its preprocessor_config.json is written as the real repo has it.
    fe = {
        "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
        "processor_class": "MusicgenMelodyProcessor",
        "feature_size": 12,
        "num_chroma": 12,
        "sampling_rate": TINY_SAMPLE_RATE,
        "n_fft": 1024,
        "hop_length": 256,
        "chunk_length": 30,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(fe, indent=2), encoding="utf-8")
    tok.save_pretrained(folder)
    return folder


def build_stable_audio(folder: Path) -> Path:
    """Tiny diffusers StableAudioPipeline (stands in for stabilityai/stable-audio-open-1.0).

    Oobleck VAE with hop 32 at 8 kHz stereo and a DiT with 250 latent frames, so the
    longest clip is 1 s.
    """
    import torch
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5EncoderModel

    torch.manual_seed(0)
    tok = tiny_t5_tokenizer()
    text_encoder = T5EncoderModel(_tiny_t5_config(len(tok)))
    vae = AutoencoderOobleck(
        encoder_hidden_size=6,
        downsampling_ratios=[4, 8],
        decoder_channels=3,
        decoder_input_channels=3,
        audio_channels=2,
        channel_multiples=[2, 4],
        sampling_rate=TINY_SAMPLE_RATE,
    )
    transformer = StableAudioDiTModel(
        sample_size=250,
        in_channels=3,
        num_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=3,
        cross_attention_dim=8,
        time_proj_dim=8,
        global_states_input_dim=8,
        cross_attention_input_dim=4,
    )
    projection = StableAudioProjectionModel(
        text_encoder_dim=16, conditioning_dim=4, min_value=0, max_value=32
    )
    scheduler = CosineDPMSolverMultistepScheduler(
        solver_order=2, prediction_type="v_prediction", sigma_data=1.0, sigma_schedule="exponential"
    )
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=tok,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


def build_clap(folder: Path) -> Path:
    """Tiny ClapModel + ClapProcessor (stands in for laion/clap-htsat-unfused).

    A character-level byte-BPE Roberta tokenizer (no merges) and an HTSAT audio tower on
    64 mel bins x 64 frames: 2 s windows at 8 kHz with a 256-sample hop.
    """
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizer,
    )

    torch.manual_seed(0)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "\u0120": 5}
    for ch in "abcdefghijklmnopqrstuvwxyzT.-":
        vocab.setdefault(ch, len(vocab))
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault("\u0120" + ch, len(vocab))
    tok = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=64)
    text = ClapTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=72,
        projection_dim=8,
    )
    audio = ClapAudioConfig(
        window_size=4,
        num_mel_bins=64,
        spec_size=64,
        patch_size=4,
        patch_stride=(4, 4),
        depths=[1, 1],
        num_attention_heads=[2, 2],
        patch_embeds_hidden_size=8,
        hidden_size=16,
        projection_dim=8,
        num_hidden_layers=2,
        enable_fusion=False,
    )
    model = ClapModel(
        ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)
    ).eval()
    fe = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=TINY_SAMPLE_RATE,
        hop_length=256,
        max_length_s=2,
        fft_window_size=256,
        frequency_min=50,
        frequency_max=4000,
    )
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return folder
