"""OpenS1's dynamic scientific tokenizer (see dynamic.py for the design).

    load_tokenizer(path=None) -> DynamicTokenizer   the bundled default, a saved directory,
                                                     an Intern-S1 HF directory (an InternS1Tokenizer:
                                                     Intern-S1's own rules, interns1.py) or a .tiktoken file
    chat.render / chat.parse_response               Intern-S1's chat template and its parser
"""

from opens1.tokenizer.dynamic import DynamicTokenizer
from opens1.tokenizer.interns1 import InternS1Tokenizer, from_interns1_dir
from opens1.tokenizer.load import load_tokenizer, qwen3_tokenizer
from opens1.tokenizer.vocab import CONTROL_TOKENS, DOMAIN_TAGS

__all__ = ["CONTROL_TOKENS", "DOMAIN_TAGS", "DynamicTokenizer", "InternS1Tokenizer", "from_interns1_dir", "load_tokenizer",
           "qwen3_tokenizer"]
