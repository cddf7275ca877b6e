"""The vocabulary every tokenizer layout shares: control tokens, domain tags, Qwen3's added
tokens, and the name of the file that describes a saved layout (docs/tokenizer.md, "Id layout")."""

LAYOUT_FILE = "opens1_tokenizer.json"
FORMAT = "opens1-dynamic-tokenizer"

DOMAINS = ("smiles", "iupac", "protein", "dna")
DOMAIN_TAGS = {
    "smiles": ("<SMILES>", "</SMILES>", "<SELFIES>", "</SELFIES>"),
    "iupac": ("<IUPAC>", "</IUPAC>"),
    "protein": ("<FASTA>", "</FASTA>"),
    "dna": ("<DNA>", "</DNA>"),
}
CONTROL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
    "<img>", "</img>", "<IMG_CONTEXT>", "<TS>", "</TS>", "<TS_CONTEXT>",
    "<|action_start|>", "<|action_end|>", "<|plugin|>", "<|interpreter|>",
)  # fmt: skip
# Qwen3's 26 added tokens, ids 151643.. in the Qwen3/Intern-S1 layouts
QWEN3_ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)  # fmt: skip
