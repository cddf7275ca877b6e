"""The Markdown renderer (corpus/pdf/markdown.py) on small hand-built page layouts: headings,
paragraph joining, tables, figures, code, display formulas, footnotes, running lines."""

from __future__ import annotations

from opens1.corpus.pdf.fragments import DocStyle, Frag, Item, PageLayout, font_name
from opens1.corpus.pdf.markdown import page_markdown, table_markdown

BODY = "ABCDEF+Times-Roman"
STYLE = DocStyle(body_size=10.0, body_font="Times-Roman")


def line(text: str, top: float, *, x0: float = 72.0, size: float = 10.0, font: str = BODY,
         removed: str = "") -> Frag:
    """A fragment whose words sit on one baseline, one space (0.3 em) apart."""
    words, x = [], x0
    for t in text.split():
        w = {"text": t, "x0": x, "x1": x + 0.5 * size * len(t), "top": top, "bottom": top + size,
             "fontname": font, "size": size}
        words.append(w)
        x = w["x1"] + 0.3 * size
    return Frag(x0=x0, x1=words[-1]["x1"], top=top, bottom=top + size, words=words, size=size,
                font=font_name(font), removed=removed)


def glyphs(spec: list[tuple[str, float, float]], top: float, *, font: str, x0: float = 100.0) -> Frag:
    """A one-word fragment built glyph by glyph: (text, size, bottom offset from the baseline)."""
    base = top + 10.0
    chars, x = [], x0
    for text, size, lift in spec:
        chars.append({"text": text, "x0": x, "x1": x + 0.6 * size, "top": base - lift - size,
                      "bottom": base - lift, "size": size})
        x += 0.6 * size
    word = {"text": "".join(c["text"] for c in chars), "x0": x0, "x1": x, "top": top, "bottom": base,
            "fontname": font, "size": 10.0, "chars": chars}
    return Frag(x0=x0, x1=x, top=top, bottom=base, words=[word], size=10.0, font=font_name(font))


def mono(text: str, top: float, *, x0: float = 72.0, pitch: float = 6.0) -> Frag:
    """A Courier line on a fixed character grid (leading spaces are indentation)."""
    words, i = [], 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        j = text.find(" ", i)
        j = len(text) if j < 0 else j
        chars = [{"text": ch, "x0": x0 + (i + k) * pitch, "x1": x0 + (i + k + 1) * pitch} for k, ch in enumerate(text[i:j])]
        words.append({"text": text[i:j], "x0": chars[0]["x0"], "x1": chars[-1]["x1"], "top": top,
                      "bottom": top + 10, "fontname": "Courier", "size": 10.0, "chars": chars})
        i = j
    return Frag(x0=words[0]["x0"], x1=words[-1]["x1"], top=top, bottom=top + 10, words=words, size=10.0,
                font="Courier")


def page(order: list, *, number: int = 2) -> PageLayout:
    frags = [o for o in order if isinstance(o, Frag)]
    items = [o for o in order if isinstance(o, Item)]
    return PageLayout(number=number, width=612.0, height=792.0, frags=frags, items=items, order=order)


def test_heading_levels_and_a_hyphenated_paragraph():
    lay = page([line("1 Introduction", 100, size=13),
                line("The archi-", 130),
                line("tecture of the model is simple.", 142),
                line("Results", 200, size=17)])
    assert page_markdown(lay, STYLE) == ("## 1 Introduction\n\nThe architecture of the model is simple.\n\n"
                                         "# Results")


def test_numbered_bold_subsection_gets_level_three():
    lay = page([line("2.1 Data sets", 100, font="ABCDEF+Times-Bold"), line("We use two corpora.", 120)])
    assert page_markdown(lay, STYLE) == "### 2.1 Data sets\n\nWe use two corpora."


def test_tables_and_figures_in_reading_order():
    table = Item("table", (72, 150, 300, 200), rows=[["name", "a|b"], ["x"]])
    figure = Item("figure", (72, 220, 300, 400))
    lay = page([line("See the table.", 100), table, figure, line("After the figure.", 420)])
    assert page_markdown(lay, STYLE, stem="paper") == (
        "See the table.\n\n| name | a\\|b |\n| - | - |\n| x |  |\n\n"
        "![Figure 2.1](paper_p2_fig1.png)\n\nAfter the figure.")


def test_table_markdown_pads_short_rows_and_escapes_pipes():
    assert table_markdown([["h1", "h2", "h3"], ["1", "2|3"]]) == \
        "| h1 | h2 | h3 |\n| - | - | - |\n| 1 | 2\\|3 |  |"


def test_running_lines_marked_removed_are_not_rendered():
    lay = page([line("Journal of Tests 2024", 20, removed="running"), line("Body text here.", 100),
                line("7", 760, removed="page-number")])
    assert page_markdown(lay, STYLE) == "Body text here."


def test_monospaced_lines_become_a_code_block_on_their_grid():
    lay = page([line("The code:", 100), mono("def f(x):", 130), mono("    return x  + 1", 142)])
    assert page_markdown(lay, STYLE) == "The code:\n\n```\ndef f(x):\n    return x  + 1\n```"


def test_display_formula_becomes_latex_with_superscript_and_tag():
    formula = glyphs([("α", 10, 0), ("=", 10, 0), ("β", 10, 0), ("2", 6, 4), ("(", 10, 0), ("1", 10, 0),
                      (")", 10, 0)], 150, font="ABCDEF+CMMI10")
    lay = page([line("Then we have", 100), formula])
    assert page_markdown(lay, STYLE) == "Then we have\n\n$$\\alpha =\\beta ^{2} \\tag{1}$$"


def test_footnotes_go_last_and_a_cut_sentence_continues_across_columns():
    lay = page([line("The result is", 100),
                line("1 A footnote at the foot of the page.", 700, size=7),
                line("shown in the second column.", 100, x0=320),
                line("Another paragraph.", 130, x0=320)])
    assert page_markdown(lay, STYLE) == ("The result is shown in the second column.\n\nAnother paragraph.\n\n"
                                         "1 A footnote at the foot of the page.")


def test_cjk_lines_join_without_a_space():
    lay = page([line("交换商品", 100), line("价值规律。", 112)])
    assert page_markdown(lay, STYLE) == "交换商品价值规律。"


def test_front_matter_of_a_first_page_is_not_headings():
    lay = page([line("A Study of Things", 80, size=20),
                line("Ada Lovelace", 110, size=12, font="ABCDEF+Times-Bold"),
                line("Abstract", 140, size=12, font="ABCDEF+Times-Bold"),
                line("We study things.", 160)], number=1)
    assert page_markdown(lay, STYLE) == "# A Study of Things\n\nAda Lovelace\n\n## Abstract\n\nWe study things."
