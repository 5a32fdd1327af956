"""Every Chinese quotation of the chapter in docs/, recipes/, README.md and src/ is verbatim.

House rule: a quotation of the chapter is copied from the seed file (``../shared/seed/*.md`` next to
the repository) with its section number, or it carries no quotation marks. The rule of
``shared/hooks/quotes_check.py`` is kept: whitespace-insensitive, a quote may leave text out with
``...`` / ``…`` and every part must then be in the chapter. On top of it this test

- follows a quotation across the ``#`` continuation lines of a YAML / Python comment header and
  across a line break in Markdown (the hook misses those);
- asks for the section number: the nearest chapter section cited before the quotation (``5.1.3``,
  ``5.2.3-5.2.4``, within the same paragraph) must contain every part of it (a citation of ``5.1``
  covers 5.1.x).

The seed is outside the package: in a pip-installed copy the test is skipped, saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED_DIR = ROOT.parent / "shared" / "seed"

CJK = re.compile(r"[\u4e00-\u9fff]")
QUOTE = re.compile(r"[\"“「『]([^\"“”「」『』]{2,200}?)[\"”」』]")
SECTION = re.compile(r"(?<![\d.])(5(?:\.\d+){1,2})(?:\s*[-–]\s*(5(?:\.\d+){1,2}))?(?![\d])")
HEADING = re.compile(r"^#+\s+(5(?:\.\d+)+)\b", re.M)
WINDOW = 400  # characters before a quotation searched for its section number


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def seed_sections(seed: str) -> dict[str, str]:
    """Section number -> its text (whitespace removed), from one heading to the next."""
    heads = list(HEADING.finditer(seed))
    return {m.group(1): squash(seed[m.start(): heads[i + 1].start() if i + 1 < len(heads) else len(seed)])
            for i, m in enumerate(heads)}


def normalise(path: Path, text: str) -> str:
    """Join the continuation lines a quotation may run across (comment headers, wrapped Markdown)."""
    if path.suffix in (".yaml", ".yml", ".py"):
        return re.sub(r"\n[ \t]*#[ \t]?", "\n", text)
    return text


@dataclass
class Finding:
    where: str
    quote: str
    problem: str  # "" when the quotation is verbatim and in the cited section


def check_text(where: str, text: str, seed: str) -> list[Finding]:
    """Every CJK quotation in ``text`` (already normalised) checked against ``seed``."""
    flat, sections = squash(seed), seed_sections(seed)
    out = []
    for m in QUOTE.finditer(text):
        q = m.group(1)
        if not CJK.search(q):
            continue
        line = text.count("\n", 0, m.start()) + 1
        parts = [p for p in re.split(r"\.\.\.|…", squash(q)) if p]
        missing = [p for p in parts if p not in flat]
        if missing:
            out.append(Finding(f"{where}:{line}", q, f"not in the chapter: {missing[0]!r}"))
            continue
        before = text[max(0, m.start() - WINDOW): m.start()]
        before = before[before.rfind("\n\n") + 1:]  # the same paragraph only
        cites = list(SECTION.finditer(before))
        if not cites:
            out.append(Finding(f"{where}:{line}", q, "no section number (5.x.y) before the quotation"))
            continue
        cited = [c for c in cites[-1].groups() if c]
        homes = [s for s, body in sections.items() if all(p in body for p in parts)]
        if not any(h == c or h.startswith(c + ".") for h in homes for c in cited):
            out.append(Finding(f"{where}:{line}", q,
                               f"cited section {'-'.join(cited)} but the text is in "
                               f"{', '.join(homes) or 'no one section'}"))
            continue
        out.append(Finding(f"{where}:{line}", q, ""))
    return out


def project_files(root: Path) -> list[Path]:
    return sorted([*root.glob("docs/**/*.md"), *root.glob("recipes/**/*.yaml"), *root.glob("README.md"),
                   *root.glob("src/**/*.py")])


def check_tree(root: Path, seed: str) -> list[Finding]:
    found = []
    for f in project_files(root):
        text = normalise(f, f.read_text(encoding="utf-8", errors="replace"))
        found += check_text(str(f.relative_to(root)), text, seed)
    return found


SEED_FIXTURE = """# 第五章
## 5.1 视觉-语言对齐基础
### 5.1.3 对比学习损失设计
- 温度参数调优：τ ∈ [0.01, 0.1]，过小导致梯度爆炸
- 批量大小效应：批量翻倍，性能提升约 1-2%
### 5.1.4 负样本采样策略
├── 80% 随机 + 20% 难例
└── 平衡探索与利用
## 5.4 视频理解的时序建模
"""


def test_checker_accepts_verbatim_quotes_with_their_section() -> None:
    text = ('# Claim (chapter 5.1.3): "温度参数调优：τ ∈ [0.01,\n#   0.1]，过小导致梯度爆炸" -- ok\n\n'
            'Mix (5.1.4, 混合策略): "80% 随机 + 20% 难例" ... and 「平衡探索与利用」.\n\n'
            'Section 5.1 says “批量大小效应 … 性能提升约 1-2%”.\n')
    found = check_text("fixture.yaml", normalise(Path("fixture.yaml"), text), SEED_FIXTURE)
    assert [f.problem for f in found] == ["", "", "", ""]
    assert "梯度爆炸" in found[0].quote  # followed across the comment continuation line


def test_checker_rejects_invented_reversed_and_misattributed_quotes() -> None:
    text = ('(chapter 5.1.3): "温度参数 τ 通常在 0.01 到 0.1 之间调优"\n\n'  # invented wording
            '(chapter 5.1.3): "温度过大导致梯度爆炸"\n\n'  # reversed meaning, not in the text
            '(chapter 5.1.4): "批量翻倍，性能提升约 1-2%"\n\n'  # real sentence, wrong section
            'no number here: "平衡探索与利用"\n\n'  # no section number at all
            '(chapter 5.1.4): "80% 随机 ... 20% 困难负样本"\n'  # one part invented
            'English "quotes" and a bare 中文 word are not quotations.\n')
    found = check_text("fixture.md", text, SEED_FIXTURE)
    problems = [f.problem for f in found]
    assert len(found) == 5
    assert all(problems), problems
    assert problems[0].startswith("not in the chapter") and problems[1].startswith("not in the chapter")
    assert problems[2] == "cited section 5.1.4 but the text is in 5.1.3"
    assert problems[3].startswith("no section number")
    assert problems[4] == "not in the chapter: '20%困难负样本'"


def test_checker_ranges_and_parent_sections() -> None:
    ok = check_text("x.md", '(chapter 5.1.2-5.1.4): "平衡探索与利用"\n\n(5.1): "梯度爆炸"', SEED_FIXTURE)
    assert [f.problem for f in ok] == ["", ""]


def test_every_chapter_quotation_in_the_project_is_verbatim(capsys: pytest.CaptureFixture) -> None:
    seeds = sorted(SEED_DIR.glob("*.md")) if SEED_DIR.is_dir() else []
    if not seeds:
        pytest.skip(f"the chapter seed ({SEED_DIR}/*.md) is not next to this checkout "
                    f"(e.g. a pip-installed copy): quotations not checked")
    seed = "\n".join(p.read_text(encoding="utf-8") for p in seeds)
    found = check_tree(ROOT, seed)
    bad = [f"{f.where}: {f.quote!r}: {f.problem}" for f in found if f.problem]
    with capsys.disabled():
        print(f"\nchapter quotations checked: {len(found)}; not verbatim or not in the cited section: {len(bad)}")
    assert len(found) >= 30, f"only {len(found)} quotations found: is the scan still covering docs/ and recipes/?"
    assert not bad, "\n".join(bad)
