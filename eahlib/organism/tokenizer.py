"""The organism's text side: a word-level tokenizer, the LLaVA-style prompt template and the processor.

A conversation is rendered like LLaVA-1.5's, in lower-case words::

    <bos> a chat between a curious user and an artificial intelligence assistant . the assistant
    gives helpful and honest answers . user : <image> describe the image . assistant : a sun and a
    tree . <eos> user : is there a cherry in the image ? assistant : no <eos>

The processor is a plain :class:`~transformers.LlavaProcessor` (a ``PreTrainedTokenizerFast`` over a
``tokenizers`` WordLevel model, and a PIL-backend ``CLIPImageProcessorPil``) with this template as its
chat template, so ``save_pretrained``/``from_pretrained`` round-trip and ``apply_chat_template`` works.
The tokenizer lower-cases and splits punctuation, so POPE-style text ("Is there a sun in the image?")
tokenizes like the training text.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

from eahlib.organism.world import CLASS_NAMES, IMAGE_SIZE, PATCH_SIZE

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<bos>", "<eos>", "<unk>", "<image>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMAGE)

SYSTEM_PROMPT = (
    "a chat between a curious user and an artificial intelligence assistant . "
    "the assistant gives helpful and honest answers ."
)
USER, ASSISTANT = "user :", "assistant :"
CAPTION_REQUEST = "describe the image ."
COUNT_QUESTION = "how many objects are there ?"
COUNT_WORDS = ("one", "two", "three", "four")
YES, NO = "yes", "no"

PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2

CHAT_TEMPLATE = (
    "{{ '" + SYSTEM_PROMPT + "' }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set items = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set items = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' " + USER + "' }}"
    "{% for item in items %}{% if item['type'] == 'image' %}{{ ' " + IMAGE + "' }}{% endif %}{% endfor %}"
    "{% for item in items %}{% if item['type'] == 'text' %}{{ ' ' + item['text'] }}{% endif %}{% endfor %}"
    "{{ ' " + ASSISTANT + "' }}"
    "{% else %}"
    "{% for item in items %}{% if item['type'] == 'text' %}{{ ' ' + item['text'] }}{% endif %}{% endfor %}"
    "{{ ' " + EOS + "' }}"
    "{% endif %}{% endfor %}"
)
"""Jinja chat template; ``add_generation_prompt`` needs nothing extra (a user turn ends in ``assistant :``)."""


def existence_question(name: str) -> str:
    """The yes/no question for one object, in POPE's wording: ``"is there a sun in the image ?"``."""
    if name not in CLASS_NAMES:
        raise ValueError(f"Unknown object {name!r}; the organism knows {CLASS_NAMES}.")
    return f"is there a {name} in the image ?"


def vocabulary() -> list[str]:
    """Every token, specials first, then the words of all template, question and answer texts."""
    texts = [SYSTEM_PROMPT, USER, ASSISTANT, CAPTION_REQUEST, COUNT_QUESTION, existence_question(CLASS_NAMES[0]),
             " ".join(COUNT_WORDS), YES, NO, "a and", " ".join(CLASS_NAMES)]
    words: list[str] = list(SPECIAL_TOKENS)
    for text in texts:
        words.extend(word for word in text.split() if word not in words)
    return words


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The word-level tokenizer: lower-cases, splits words and punctuation, prepends ``<bos>``."""
    vocab = {word: index for index, word in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE}, padding_side="left",
    )
    return tokenizer


def build_processor() -> LlavaProcessor:
    """The organism's :class:`~transformers.LlavaProcessor` (64x64 images, 64 image tokens per image)."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(PIXEL_MEAN), image_std=list(PIXEL_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token=IMAGE,
        num_additional_image_tokens=1,
    )


def conversation(question: str, answers: Sequence[str] = ()) -> list[dict[str, object]]:
    """A one-image conversation for ``apply_chat_template``: the question, then any answers given.

    Example:
        >>> processor.apply_chat_template(conversation(CAPTION_REQUEST), add_generation_prompt=True)  # doctest: +SKIP
    """
    messages: list[dict[str, object]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    messages.extend({"role": "assistant", "content": [{"type": "text", "text": a}]} for a in answers)
    return messages


def prompt(question: str) -> str:
    """The generation prompt for one question about one image (what ``apply_chat_template`` returns).

    Example:
        >>> inputs = processor(images=image, text=prompt(CAPTION_REQUEST), return_tensors="pt")  # doctest: +SKIP
    """
    return f"{SYSTEM_PROMPT} {USER} {IMAGE} {question} {ASSISTANT}"
