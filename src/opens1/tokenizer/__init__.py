"""OpenS1's dynamic scientific tokenizer (see dynamic.py for the design).

    load_tokenizer(path=None) -> DynamicTokenizer   the bundled default, a saved directory,
                                                     an Intern-S1 HF directory or a .tiktoken file
    chat.render / chat.parse_response               the ChatML + <think> template and its parser
"""

from opens1.tokenizer.dynamic import (
    CONTROL_TOKENS,
    DOMAIN_TAGS,
    DynamicTokenizer,
    from_interns1_dir,
    load_tokenizer,
    qwen3_tokenizer,
)

__all__ = ["CONTROL_TOKENS", "DOMAIN_TAGS", "DynamicTokenizer", "from_interns1_dir", "load_tokenizer", "qwen3_tokenizer"]
