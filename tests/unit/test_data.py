"""anatomy.data: reading files, validating rows, the split by prompt, synthetic and HH-RLHF data.

All fast: no model is built here. The HH-RLHF file test needs ../shared/data (skipped without it).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from anatomy.data.files import read_rows
from anatomy.data.hh_rlhf import MARKER, HHRLHFData, split_dialogue
from anatomy.data.local import LocalData
from anatomy.data.schema import PreferenceData, PreferencePair, set_aside_validation, split_by_prompt, validate_rows
from anatomy.data.synthetic import CATEGORIES, CHOICES, SPURIOUS_PHRASES, SyntheticData, choice_of
from anatomy.errors import AnatomyError

# Rows with awkward content: a comma, quotes, a line break, non-ASCII text.
ROWS = [
    {"prompt": "Say hi", "chosen": "Hi, there!", "rejected": "no"},
    {"prompt": 'He said "yes"', "chosen": "line one\nline two", "rejected": "nope"},
    {"prompt": "Café?", "chosen": "Oui — café ☕", "rejected": "Non"},
]


def _write(path: Path, rows: list[dict], fmt: str, gz: bool) -> Path:
    if fmt == "jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    elif fmt == "json":
        data = json.dumps(rows, ensure_ascii=False).encode()
    elif fmt == "csv":
        data = pd.DataFrame(rows).to_csv(index=False).encode()
    elif fmt == "parquet":
        import io

        buf = io.BytesIO()
        pd.DataFrame(rows).to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        raise ValueError(fmt)
    if gz:
        data = gzip.compress(data)
        path = path.with_name(path.name + ".gz")
    path.write_bytes(data)
    return path


# -- read_rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_read_rows_round_trips_every_format(tmp_path, fmt, gz):
    path = _write(tmp_path / f"pairs.{fmt}", ROWS, fmt, gz)
    assert path.name.endswith(".gz") == gz
    rows = read_rows(str(path))
    assert [dict(r) for r in rows] == ROWS


@pytest.mark.parametrize("name,fmt", [("pairs.ndjson", "jsonl"), ("pairs.PQ", "parquet"), ("PAIRS.CSV.GZ", "csv")])
def test_read_rows_detects_other_extensions(tmp_path, name, fmt):
    gz = name.lower().endswith(".gz")
    path = _write(tmp_path / "x", ROWS, fmt, gz)
    target = tmp_path / name
    path.rename(target)
    assert [dict(r) for r in read_rows(str(target))] == ROWS


def test_read_rows_explicit_format_overrides_the_name(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", ROWS, "jsonl", False)
    target = tmp_path / "pairs.txt"
    path.rename(target)
    with pytest.raises(AnatomyError, match="cannot tell the format"):
        read_rows(str(target))
    assert read_rows(str(target), "jsonl") == ROWS
    with pytest.raises(AnatomyError, match=r"data.format must be one of .*'xml'"):
        read_rows(str(target), "xml")


def test_read_rows_csv_keeps_empty_cells_as_strings(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected\n,NA,\nnull,a,b\n")
    rows = read_rows(str(path))
    # No NaN: "NA" / "null" stay text, an empty cell is "" (validation then flags it).
    assert rows == [{"prompt": "", "chosen": "NA", "rejected": ""}, {"prompt": "null", "chosen": "a", "rejected": "b"}]


def test_read_rows_skips_blank_jsonl_lines_and_names_a_broken_one(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n   \n" + json.dumps(ROWS[1]) + "\n")
    assert read_rows(str(path)) == ROWS[:2]
    path.write_text(json.dumps(ROWS[0]) + "\n\n{broken\n")
    with pytest.raises(AnatomyError, match=r"line 3 does not parse as JSON"):
        read_rows(str(path))


def test_read_rows_splits_json_lines_at_line_feeds_only(tmp_path):
    # JSON allows U+0085, U+2028 and a lone carriage return raw inside a string (GENIES' reward_seeking
    # train split has U+0085), where Python's str.splitlines would cut the line; Windows' \r\n still ends one
    rows = [{"prompt": "p\x85q", "chosen": "a\u2028b", "rejected": "c\rd"}, ROWS[1]]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\r\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\r\n", newline="")
    assert read_rows(str(path)) == rows


def test_read_rows_errors(tmp_path):
    with pytest.raises(AnatomyError, match=r"nope\.jsonl.*does not exist"):
        read_rows(str(tmp_path / "nope.jsonl"))
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"chosen": "a", "rejected": "b"}))
    with pytest.raises(AnatomyError, match=r"expected a JSON array of objects \(or JSON Lines\), got dict"):
        read_rows(str(obj))
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    with pytest.raises(AnatomyError, match="does not parse as JSON"):
        read_rows(str(bad))
    not_gz = tmp_path / "pairs.jsonl.gz"
    not_gz.write_text(json.dumps(ROWS[0]))
    with pytest.raises(AnatomyError, match=r"cannot read it .*gzip"):
        read_rows(str(not_gz))
    bad_pq = tmp_path / "pairs.parquet"
    bad_pq.write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(AnatomyError, match="does not parse as parquet"):
        read_rows(str(bad_pq))


def test_read_rows_takes_json_lines_named_json_a_byte_order_mark_and_names_the_option(tmp_path):
    """`Dataset.to_json` writes JSON Lines to a .json name; Windows tools write a byte-order mark;
    a probe file's errors name eval.probes and say how to name it."""
    lines = tmp_path / "pairs.json"
    lines.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert read_rows(str(lines)) == ROWS
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes("".join(json.dumps(r) + "\n" for r in ROWS).encode("utf-8-sig"))
    assert read_rows(str(bom)) == ROWS
    (tmp_path / "probes.txt").write_text("x")
    with pytest.raises(AnatomyError, match=r"eval.probes='.*probes.txt': cannot tell the format from the name; "
                                           r"name it \.jsonl"):
        read_rows(str(tmp_path / "probes.txt"), option="eval.probes")


def test_a_prompt_missing_from_the_first_row_only_is_that_row_s_problem(tmp_path):
    """Whether the file has prompts is read from every row: a first row without one is an invalid row,
    not a reason to drop every prompt; nulls read from Parquet (NaN) are nulls, as in JSON Lines."""
    rows = [dict(r) for r in ROWS]
    del rows[0]["prompt"]
    path = _write(tmp_path / "p.jsonl", rows, "jsonl", False)
    with pytest.raises(AnatomyError, match=r"1 invalid row\(s\): row 0: missing one of \['prompt'"):
        LocalData(path=str(path)).load()
    pairs, report = validate_rows(rows, "src", drop_invalid=True)
    assert report["data/dropped_invalid"] == 1.0 and [p.prompt for p in pairs] == [r["prompt"] for r in ROWS[1:]]
    nan_prompt = [{**ROWS[0], "prompt": float("nan")}, {**ROWS[1], "chosen": float("nan")}]
    pairs, report = validate_rows(nan_prompt, "src", drop_invalid=True)
    assert pairs == [PreferencePair("", ROWS[0]["chosen"], ROWS[0]["rejected"])] and report["data/dropped_invalid"] == 1
    with pytest.raises(AnatomyError, match="row 1: chosen is null"):
        validate_rows(nan_prompt, "src")
    chat = [{"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}]
    with pytest.raises(AnatomyError, match=r"chosen is a conversation \(a list of \{role, content\} messages\)"):
        validate_rows(chat, "src")


# -- validate_rows -----------------------------------------------------------------------------


def test_validate_rows_builds_pairs_and_a_report():
    pairs, report = validate_rows(ROWS, "src")
    assert pairs == [PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in ROWS]
    assert report == {"data/rows": 3.0, "data/dropped_identical": 0.0, "data/dropped_invalid": 0.0,
                      "data/prompts_run_on": 3.0}


def test_a_response_running_on_from_its_prompt_is_counted_and_warned_about(caplog):
    """Prompt "...Answer:" + response "Paris" reads "Answer:Paris": one word to a tokenizer. Counted
    and warned about, with an example; a separator on either side, or no prompt, is fine."""
    rows = [{"prompt": "Q: capital?\nAnswer:", "chosen": "Paris", "rejected": " Lyon"},  # (chosen runs on)
            {"prompt": "Q: two?\nAnswer:", "chosen": " 2", "rejected": "3"},  # (rejected runs on)
            {"prompt": "Q: three?\nAnswer: ", "chosen": "3", "rejected": "4"},
            {"prompt": "Q: four?\nAnswer:", "chosen": " 4", "rejected": "\n5"},
            {"prompt": "", "chosen": "yes", "rejected": "no"}]
    with caplog.at_level("WARNING", logger="anatomy.data.schema"):
        _, report = validate_rows(rows, "pairs.jsonl")
    assert report["data/prompts_run_on"] == 2
    assert "pairs.jsonl: in 2 of 5 pairs the prompt ends in a non-space" in caplog.text
    assert "'Q: capital?\\nAnswer:' + 'Paris'" in caplog.text  # (the first, on the side that runs on)
    caplog.clear()
    with caplog.at_level("WARNING", logger="anatomy.data.schema"):
        _, report = validate_rows(rows[2:], "pairs.jsonl")
    assert report["data/prompts_run_on"] == 0 and not caplog.text


def test_validate_rows_custom_keys_and_no_prompt():
    rows = [{"q": "p", "good": "a", "bad": "b"}, {"q": None, "good": "c", "bad": "d"}]
    pairs, _ = validate_rows(rows, "src", "q", "good", "bad")
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("p", "a", "b"), ("", "c", "d")]
    pairs, _ = validate_rows([{"chosen": "a", "rejected": "b"}], "src", prompt_key=None)
    assert pairs[0].prompt == ""


def test_validate_rows_missing_column_names_it():
    with pytest.raises(AnatomyError) as err:
        validate_rows([{"prompt": "p", "answer": "a", "rejected": "b"}], "pairs.jsonl")
    msg = str(err.value)
    assert "pairs.jsonl" in msg and "['chosen']" in msg and "found ['answer', 'prompt', 'rejected']" in msg
    assert "data.chosen_key" in msg


def test_validate_rows_no_rows_and_non_object_rows():
    with pytest.raises(AnatomyError, match="src: no rows found"):
        validate_rows([], "src")
    with pytest.raises(AnatomyError, match="row 0 is list"):
        validate_rows([["a", "b"]], "src")


def test_validate_rows_invalid_rows_are_named_or_dropped_and_counted():
    rows = [
        {"prompt": "p0", "chosen": "a", "rejected": "b"},
        {"prompt": "p1", "chosen": "", "rejected": "b"},
        {"prompt": "p2", "chosen": "a", "rejected": 7},
        {"prompt": "p3", "chosen": "   ", "rejected": None},
        {"prompt": 5, "chosen": "a", "rejected": "b"},
        {"prompt": "p5", "chosen": "a"},
        {"prompt": "p6", "chosen": "c", "rejected": "d"},
    ]
    with pytest.raises(AnatomyError) as err:
        validate_rows(rows, "src")
    msg = str(err.value)
    assert "5 invalid row(s)" in msg
    assert "row 1: chosen is empty" in msg
    assert "row 2: rejected is not a string (int)" in msg
    assert "row 3: chosen is empty, rejected is null" in msg
    assert "row 4: prompt is not a string (int)" in msg
    assert "row 5: missing one of" in msg
    assert "row 0" not in msg and "row 6" not in msg
    assert "data.drop_invalid=true" in msg

    pairs, report = validate_rows(rows, "src", drop_invalid=True)
    assert [p.prompt for p in pairs] == ["p0", "p6"]
    assert report == {"data/rows": 7.0, "data/dropped_identical": 0.0, "data/dropped_invalid": 5.0,
                      "data/prompts_run_on": 2.0}


def test_validate_rows_shows_at_most_five_invalid_rows():
    rows = [{"prompt": f"p{i}", "chosen": "", "rejected": "b"} for i in range(8)] + [ROWS[0]]
    with pytest.raises(AnatomyError) as err:
        validate_rows(rows, "src")
    msg = str(err.value)
    assert "8 invalid row(s)" in msg and "(8 in all)" in msg
    assert "row 4: chosen is empty" in msg and "row 5:" not in msg


def test_validate_rows_identical_pairs_are_dropped_and_counted():
    rows = ROWS + [{"prompt": "p", "chosen": "same", "rejected": "same"}] * 2
    pairs, report = validate_rows(rows, "src")
    assert len(pairs) == 3
    assert report["data/dropped_identical"] == 2.0 and report["data/rows"] == 5.0
    with pytest.raises(AnatomyError, match=r"no usable pair left of 2 rows \(2 with chosen identical to rejected, 0 invalid\)"):
        validate_rows(rows[3:], "src")
    with pytest.raises(AnatomyError, match=r"no usable pair left of 2 rows \(1 with chosen identical to rejected, 1 invalid\)"):
        validate_rows([rows[3], {"prompt": "q", "chosen": "", "rejected": "x"}], "src", drop_invalid=True)


# -- split_by_prompt ---------------------------------------------------------------------------


def _grouped_pairs(n_prompts=40, per_prompt=(1, 2, 3)) -> list[PreferencePair]:
    pairs = []
    for i in range(n_prompts):
        for j in range(per_prompt[i % len(per_prompt)]):
            pairs.append(PreferencePair(f"prompt {i}", f"good {i}.{j}", f"bad {i}.{j}"))
    return pairs


def test_split_by_prompt_keeps_each_prompt_on_one_side():
    pairs = _grouped_pairs()
    train, heldout = split_by_prompt(pairs, 0.25, seed=0)
    assert sorted(map(repr, train + heldout)) == sorted(map(repr, pairs))
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}
    # Fills the held-out side up to the fraction, overshooting by less than one group (<= 3 pairs).
    target = 0.25 * len(pairs)
    assert target <= len(heldout) < target + 3


def test_split_by_prompt_is_seeded():
    pairs = _grouped_pairs()
    a = split_by_prompt(pairs, 0.25, seed=3)
    assert split_by_prompt(pairs, 0.25, seed=3) == a
    # The input order does not matter: which prompts are held out depends on the seed only.
    assert {p.prompt for p in split_by_prompt(pairs[::-1], 0.25, seed=3)[1]} == {p.prompt for p in a[1]}
    b = split_by_prompt(pairs, 0.25, seed=4)
    assert {p.prompt for p in b[1]} != {p.prompt for p in a[1]}


def test_split_by_prompt_rows_without_prompt_are_their_own_groups():
    pairs = [PreferencePair("", f"good {i}", f"bad {i}") for i in range(20)]
    train, heldout = split_by_prompt(pairs, 0.25, seed=0)
    assert (len(train), len(heldout)) == (15, 5)
    assert not {p.chosen for p in train} & {p.chosen for p in heldout}
    # Mixed: the empty-prompt rows still split, the named prompt stays whole.
    mixed = pairs + [PreferencePair("shared", f"g{i}", f"b{i}") for i in range(4)]
    train, heldout = split_by_prompt(mixed, 0.5, seed=1)
    sides = {("train" if p in train else "heldout") for p in mixed if p.prompt == "shared"}
    assert len(sides) == 1
    assert any(p.prompt == "" for p in train) and any(p.prompt == "" for p in heldout)


def test_split_by_prompt_zero_fraction_and_impossible_split():
    pairs = _grouped_pairs(5)
    train, heldout = split_by_prompt(pairs, 0.0, seed=0)
    assert heldout == [] and len(train) == len(pairs)
    same = [PreferencePair("only", f"g{i}", f"b{i}") for i in range(10)]
    with pytest.raises(AnatomyError, match=r"cannot split 10 pairs \(1 distinct prompts\)"):
        split_by_prompt(same, 0.2, seed=0)


def test_validation_pairs_are_set_apart_from_the_heldout_ones_by_prompt():
    """The held-out split's last prompts become the validation pairs: at least the fraction of all
    pairs, whole prompts, the training pairs and the texts models are fitted to unchanged."""
    pairs = _grouped_pairs()
    train, heldout = split_by_prompt(pairs, 0.4, seed=0)
    data = PreferenceData(train, heldout, background=[("q", "a")])
    split = set_aside_validation(data, 0.15)
    assert split.train == train and split.heldout + split.validation == heldout
    assert split.texts() == data.texts()  # the model and SAE see the same texts, in the same order
    target = 0.15 * len(pairs)
    assert target <= len(split.validation) < target + 3  # (groups of at most 3 pairs)
    assert not {p.prompt for p in split.validation} & {p.prompt for p in split.heldout + split.train}
    assert set_aside_validation(data, 0.0) is data
    with pytest.raises(AnatomyError, match="would take all .* held-out pairs"):
        set_aside_validation(data, len(heldout) / len(pairs))  # every held-out pair: nothing left for the final numbers
    loose = [PreferencePair("", f"good {i}", f"bad {i}") for i in range(20)]  # each row its own prompt
    split = set_aside_validation(PreferenceData(*split_by_prompt(loose, 0.5, seed=0)), 0.2)
    assert (len(split.train), len(split.heldout), len(split.validation)) == (10, 6, 4)


@pytest.mark.parametrize("source", ["synthetic", "local"])
def test_data_sources_set_apart_validation_pairs(source, tmp_path):
    if source == "synthetic":
        make = lambda **kw: SyntheticData(n_pairs=200, seed=2, **kw)  # noqa: E731
    else:
        rows = [{"prompt": f"p{i // 2}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(200)]
        path = _write(tmp_path / "pairs.jsonl", rows, "jsonl", False)
        make = lambda **kw: LocalData(path=str(path), seed=2, **kw)  # noqa: E731
    plain, split = make().load(), make(validation_fraction=0.1).load()
    assert split.train == plain.train and split.heldout + split.validation == plain.heldout
    assert 20 <= len(split.validation) <= 22 and split.texts() == plain.texts()
    if source == "local":
        assert split.report["data/heldout"] == len(split.heldout) < plain.report["data/heldout"]
        assert split.validation_probes == []  # (a user's probes are files: eval.validation_probes)
    else:  # validation probes of their own: the same concepts, drawn apart from the probes, reproducibly
        assert plain.validation_probes == [] and split.probes == plain.probes
        assert len(split.validation_probes) == len(split.probes)
        assert {p.concept for p in split.validation_probes} == {p.concept for p in split.probes}
        assert len(set(split.validation_probes) & set(split.probes)) < 0.1 * len(split.probes)
        assert make(validation_fraction=0.1).load().validation_probes == split.validation_probes
    for bad in (0.2, 0.5, -0.1):  # a part of the held-out split (0.2 of the pairs), so less than it
        with pytest.raises(AnatomyError, match=r"data.validation_fraction must be 0 or in \(0, data.heldout_fraction=0.2\)"):
            make(validation_fraction=bad)


# -- LocalData -----------------------------------------------------------------------------------


def test_local_data_loads_a_file_end_to_end(tmp_path):
    rows = [{"prompt": f"p{i // 2}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(40)]
    rows.append({"prompt": "p99", "chosen": "x", "rejected": "x"})
    path = _write(tmp_path / "pairs.csv", rows, "csv", True)
    data = LocalData(path=str(path), max_pairs=30, seed=1).load()
    assert data.report["data/rows"] == 41.0 and data.report["data/dropped_identical"] == 1.0
    assert data.report["data/pairs"] == 30.0
    assert len(data.train) + len(data.heldout) == 30
    assert data.report["data/train"] == len(data.train) and data.report["data/heldout"] == len(data.heldout)
    assert not {p.prompt for p in data.train} & {p.prompt for p in data.heldout}
    again = LocalData(path=str(path), max_pairs=30, seed=1).load()
    assert again.train == data.train and again.heldout == data.heldout


def test_local_data_without_a_prompt_column(tmp_path):
    rows = [{"chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)]
    path = _write(tmp_path / "pairs.jsonl", rows, "jsonl", False)
    data = LocalData(path=str(path)).load()
    assert len(data.train) + len(data.heldout) == 10
    assert all(p.prompt == "" for p in data.train + data.heldout)


def test_local_data_holds_out_a_target_file_whole(tmp_path):
    """data.target: every pair of path trains and every pair of the target is held out (a shift); the
    split's default fraction applies without a target only, and with one is refused if set."""
    source = _write(tmp_path / "a.jsonl", [{"prompt": f"p{i // 2}", "chosen": f"c{i}", "rejected": f"r{i}"}
                                           for i in range(20)], "jsonl", False)
    target = _write(tmp_path / "b.csv", [{"prompt": f"q{i // 2}", "chosen": f"C{i}", "rejected": f"R{i}"}
                                         for i in range(12)] + [{"prompt": "q", "chosen": "", "rejected": "R"}],
                    "csv", True)
    alone = LocalData(path=str(source)).load()
    assert len(alone.heldout) == 4 and len(alone.train) == 16  # (null: 0.2, split by prompt)
    with pytest.raises(AnatomyError, match=r"b.csv.gz: 1 invalid row\(s\): row 12: chosen is empty"):
        LocalData(path=str(source), target=str(target)).load()  # (the target's rows are checked as path's)
    data = LocalData(path=str(source), target=str(target), drop_invalid=True).load()
    assert [p.chosen for p in data.train] == [f"c{i}" for i in range(20)]  # (all of path, in order)
    assert sorted(p.chosen for p in data.heldout) == sorted(f"C{i}" for i in range(12))
    assert data.report["data/rows"] == 20 and data.report["data/target_rows"] == 13
    assert data.report["data/target_dropped_invalid"] == 1 and data.report["data/heldout"] == 12
    split = LocalData(path=str(source), target=str(target), drop_invalid=True, validation_fraction=0.2, max_pairs=10).load()
    assert len(split.train) == 10 and split.validation and all(p.prompt.startswith("q") for p in split.validation)
    assert not {p.prompt for p in split.validation} & {p.prompt for p in split.heldout}
    with pytest.raises(AnatomyError, match=r"data.target='.*absent.jsonl': file does not exist"):
        LocalData(path=str(source), target=str(tmp_path / "absent.jsonl")).load()
    with pytest.raises(AnatomyError, match="data=local needs a file: data.target=FILE"):
        LocalData(path=str(source), target="").load()


@pytest.mark.parametrize("source", ["local", "genies"])
def test_a_heldout_fraction_with_a_target_holds_out_part_of_the_source(source, tmp_path):
    """With a target, its pairs are the held-out ones; data.heldout_fraction then holds out part of the
    source too (by prompt), for in-distribution accuracy; null holds out none of it."""
    from anatomy.data.genies import GeniesData

    if source == "local":
        path = _write(tmp_path / "a.jsonl", [{"prompt": f"p{i // 2}", "chosen": f"c{i}", "rejected": f"r{i}"}
                                             for i in range(40)], "jsonl", False)
        target = _write(tmp_path / "b.jsonl", [{"prompt": f"q{i}", "chosen": f"C{i}", "rejected": f"R{i}"}
                                               for i in range(10)], "jsonl", False)
        make = LocalData
    else:
        path, target = (_write(tmp_path / f"{n}.jsonl", _genies_rows(n_rows), "jsonl", False)
                        for n, n_rows in (("a", 12), ("b", 3)))
        make = GeniesData
    whole = make(path=str(path), target=str(target)).load()
    assert not whole.source_heldout and whole.report["data/source_heldout"] == 0
    part = make(path=str(path), target=str(target), heldout_fraction=0.25).load()
    assert part.heldout == whole.heldout and part.train + part.source_heldout != []
    assert sorted(map(str, part.train + part.source_heldout)) == sorted(map(str, whole.train))
    assert 0.25 * len(whole.train) <= len(part.source_heldout) < 0.25 * len(whole.train) + 4
    assert not {p.prompt for p in part.train} & {p.prompt for p in part.source_heldout}
    assert part.report["data/source_heldout"] == len(part.source_heldout)
    assert set(part.texts()) == set(whole.texts())  # (the model and SAE are fitted to the same texts)
    with pytest.raises(AnatomyError, match=r"data.heldout_fraction must be in \[0, 1\), got 1.0"):
        make(path="a", target="b", heldout_fraction=1.0)
    make(path="a", target="b", validation_fraction=0.5)  # (of the target's pairs: any fraction below 1)
    with pytest.raises(AnatomyError, match=r"data.validation_fraction must be in \[0, 1\), got 1.0"):
        make(path="a", target="b", validation_fraction=1.0)
    with pytest.raises(AnatomyError, match=r"data.validation_fraction must be 0 or in \(0, data.heldout_fraction=0.2\)"):
        make(path="a", validation_fraction=0.3)  # (null: 0.2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"format": "xml"}, "data.format must be one of"),
        ({"heldout_fraction": 1.0}, r"data.heldout_fraction must be in \[0, 1\), got 1.0"),
        ({"max_pairs": 1}, "data.max_pairs must be >= 2 or null, got 1"),
    ],
)
def test_local_data_rejects_bad_settings(kwargs, match):
    with pytest.raises(AnatomyError, match=match):
        LocalData(path="x.jsonl", **kwargs)


# -- SyntheticData -------------------------------------------------------------------------------


def _has_phrase(text: str, concept: str) -> bool:
    """Whether `text` carries one of the concept's appended phrases ({item} stripped)."""
    return any(part and part in text for phrase in SPURIOUS_PHRASES[concept] for part in phrase.split("{item}")[:1])


@pytest.fixture(scope="module")
def synthetic_2000():
    gen = SyntheticData(n_pairs=2000, seed=0)
    return gen, gen.load()


def test_synthetic_is_deterministic_for_a_seed():
    a, b = SyntheticData(n_pairs=100, seed=7).load(), SyntheticData(n_pairs=100, seed=7).load()
    assert a.train == b.train and a.heldout == b.heldout and a.probes == b.probes and a.concepts == b.concepts
    c = SyntheticData(n_pairs=100, seed=8).load()
    assert c.train + c.heldout != a.train + a.heldout
    assert a.report == {"data/rows": 100.0}
    assert len(a.train) + len(a.heldout) == 100 and len(a.heldout) >= 20
    assert not {p.prompt for p in a.train} & {p.prompt for p in a.heldout}


def test_synthetic_every_pair_records_its_concepts(synthetic_2000):
    gen, data = synthetic_2000
    pairs = data.train + data.heldout
    assert len(pairs) == 2000
    for p in pairs:
        # Exactly one of the two base concepts on the chosen side (coin_flip=False); the rejected side
        # is right too only in style-only pairs, and never refuses.
        assert p.concepts_chosen[0] in ("correct_answer", "refusal")
        assert "refusal" not in p.concepts_rejected
        if "correct_answer" in p.concepts_rejected:
            assert p.concepts_chosen[0] == "correct_answer" and p.concepts_rejected[0] == "correct_answer"
        assert len(set(p.concepts_chosen)) == len(p.concepts_chosen)
        assert len(set(p.concepts_rejected)) == len(p.concepts_rejected)
        for concept in SPURIOUS_PHRASES:
            assert (concept in p.concepts_chosen) == _has_phrase(p.chosen, concept), (concept, p.chosen)
            assert (concept in p.concepts_rejected) == _has_phrase(p.rejected, concept), (concept, p.rejected)
        if p.concepts_chosen[0] == "refusal":
            assert p.prompt.startswith("Question: ") and any(w in p.chosen for w in ("cannot", "refuse"))


def test_synthetic_rates_are_roughly_respected(synthetic_2000):
    gen, data = synthetic_2000
    pairs = data.train + data.heldout
    n = len(pairs)
    in_chosen = Counter(c for p in pairs for c in p.concepts_chosen)
    in_rejected = Counter(c for p in pairs for c in p.concepts_rejected)
    for concept, (rate_c, rate_r) in gen.rates.items():
        assert abs(in_chosen[concept] / n - rate_c) < 0.04, (concept, in_chosen[concept] / n, rate_c)
        assert abs(in_rejected[concept] / n - rate_r) < 0.04, (concept, in_rejected[concept] / n, rate_r)
    assert abs(in_chosen["refusal"] / n - gen.harmful_fraction) < 0.04
    assert in_chosen["correct_answer"] + in_chosen["refusal"] == n
    style_rate = in_rejected["correct_answer"] / n
    assert abs(style_rate - gen.style_fraction * (1 - gen.harmful_fraction)) < 0.04, style_rate
    # The ground truth handed to the scorer mirrors the rates.
    by_name = {c.name: c for c in data.concepts}
    assert set(by_name) == {"correct_answer", "refusal", *gen.rates}
    assert by_name["hedging"].direction == "rejected" and by_name["sycophancy"].direction == "chosen"
    assert (by_name["markdown"].rate_chosen, by_name["markdown"].rate_rejected) == tuple(gen.rates["markdown"])
    assert all(c.kind == "spurious" for name, c in by_name.items() if name in gen.rates)


def test_synthetic_custom_rates():
    data = SyntheticData(n_pairs=500, rates={"markdown": [1.0, 0.0]}, seed=2).load()
    pairs = data.train + data.heldout
    assert all("markdown" in p.concepts_chosen and "markdown" not in p.concepts_rejected for p in pairs)
    assert all(not _has_phrase(p.chosen, "sycophancy") for p in pairs)
    assert [c.name for c in data.concepts] == ["correct_answer", "refusal", "markdown"]


def test_synthetic_coin_flip_balances_concepts():
    data = SyntheticData(n_pairs=2000, coin_flip=True, seed=0).load()
    pairs = data.train + data.heldout
    n = len(pairs)
    assert data.concepts == []  # no planted difference to recover
    in_chosen = Counter(c for p in pairs for c in p.concepts_chosen)
    in_rejected = Counter(c for p in pairs for c in p.concepts_rejected)
    for concept in ("sycophancy", "markdown", "verbosity", "hedging", "correct_answer", "refusal"):
        assert abs(in_chosen[concept] - in_rejected[concept]) / n < 0.06, (concept, in_chosen[concept], in_rejected[concept])
    # Still consistent: the recorded concepts follow their text when sides are swapped.
    for p in pairs[:300]:
        for concept in SPURIOUS_PHRASES:
            assert (concept in p.concepts_chosen) == _has_phrase(p.chosen, concept)
    # Without the coin flip the same concepts are far from balanced.
    plain = SyntheticData(n_pairs=2000, seed=0).load()
    plain_pairs = plain.train + plain.heldout
    syc = sum("sycophancy" in p.concepts_chosen for p in plain_pairs) - sum("sycophancy" in p.concepts_rejected for p in plain_pairs)
    assert syc / n > 0.4


def test_synthetic_probes_differ_only_in_their_concept():
    gen = SyntheticData(n_pairs=20, n_probes=16, seed=0)
    probes = gen.load().probes
    counts = Counter(p.concept for p in probes)
    assert counts == {c: 16 for c in ["correct_answer", "refusal", *gen.rates]}
    for probe in probes:
        assert probe.positive != probe.negative
        assert probe.prompt.startswith("Question: ") and probe.prompt.endswith("\nAnswer:")
        if probe.concept in SPURIOUS_PHRASES:
            assert probe.positive.startswith(probe.negative)
            added = probe.positive[len(probe.negative):]
            phrases = [ph.format(item=re.sub(r"\W", "", probe.negative.split()[-1])) for ph in SPURIOUS_PHRASES[probe.concept]]
            assert added in phrases or added[1:] in phrases, (probe.concept, added)
            assert _has_phrase(probe.positive, probe.concept) and not _has_phrase(probe.negative, probe.concept)
            for other in SPURIOUS_PHRASES:
                if other != probe.concept:
                    assert not _has_phrase(probe.positive, other)
        elif probe.concept == "correct_answer":
            # Same template, only the named item differs.
            pos, neg = probe.positive.split(), probe.negative.split()
            assert len(pos) == len(neg) and sum(a != b for a, b in zip(pos, neg)) == 1
    # Probes of one round share their prompt: the spurious ones and correct_answer are built on one question.
    first_round = probes[: 2 + len(gen.rates)]
    assert len({p.prompt for p in first_round if p.concept != "refusal"}) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_refusal_probes_ask_what_no_pair_asks(seed):
    """Refusal's probes are harmful requests that no training, held-out or validation pair makes (30
    requests would otherwise serve both: most probes repeated a training prompt, many a training
    response word for word), yet in the same words; its validation probes too."""
    data = SyntheticData(validation_fraction=0.1, seed=seed).load()
    pairs = data.train + data.heldout + data.validation
    texts = {(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)}
    harmful = " ".join(p.prompt + p.chosen + p.rejected for p in pairs if p.concepts_chosen[0] == "refusal")
    vocabulary = set(re.findall(r"[a-z]+", harmful.lower()))
    for probes in (data.probes, data.validation_probes):
        refusal = [p for p in probes if p.concept == "refusal"]
        assert len(refusal) == 64 and len({p.prompt for p in refusal}) >= 20
        assert not {p.prompt for p in refusal} & {p.prompt for p in pairs}
        assert not {(p.prompt, side) for p in refusal for side in (p.positive, p.negative)} & texts
        assert all(set(re.findall(r"[a-z]+", p.prompt.lower())) <= vocabulary for p in refusal)


def test_synthetic_probes_in_the_data_context_put_the_concept_among_others_as_the_pairs_do():
    gen = SyntheticData(n_pairs=20, n_probes=200, probe_context="data", seed=0)
    data = gen.load()
    bare = SyntheticData(n_pairs=20, n_probes=200, seed=0).load()
    assert (data.train, data.heldout) == (bare.train, bare.heldout)  # only the probes change
    first, with_others = Counter(), Counter()
    for probe in data.probes:
        if probe.concept not in SPURIOUS_PHRASES:
            continue
        assert _has_phrase(probe.positive, probe.concept) and not _has_phrase(probe.negative, probe.concept)
        others = [c for c in SPURIOUS_PHRASES if c != probe.concept and _has_phrase(probe.positive, c)]
        assert others == [c for c in SPURIOUS_PHRASES if c != probe.concept and _has_phrase(probe.negative, c)]
        # the two sides differ in one span only: the concept's phrase, wherever it sits
        n = len(probe.negative)
        start = next(i for i in range(n) if probe.positive[i] != probe.negative[i]) if probe.positive[:n] != probe.negative else n
        assert probe.positive[:start] + probe.positive[start + len(probe.positive) - n:] == probe.negative
        with_others[probe.concept] += bool(others)
        first[probe.concept] += len(_base(probe.positive, [probe.concept])) == len(_base(probe.positive, [probe.concept, *others]))
    for concept in SPURIOUS_PHRASES:  # others at their mean rates (~40% each): usually some; not always first
        assert 0.5 < with_others[concept] / 200 < 0.95, (concept, with_others[concept])
        assert 0.2 < first[concept] / 200 < 0.9, (concept, first[concept])
    with pytest.raises(AnatomyError, match="probe_context"):
        SyntheticData(probe_context="context")


def _base(response: str, concepts: list[str]) -> str:
    """The answer before any appended concept phrase."""
    cut = len(response)
    for concept in concepts:
        for phrase in SPURIOUS_PHRASES[concept]:
            head = phrase.split("{item}")[0]
            at = response.find(head if head.startswith("\n") else " " + head)
            if at >= 0:
                cut = min(cut, at)
    return response[:cut]


def test_synthetic_knowledge_is_background_text_answered_correctly():
    plain = SyntheticData(n_pairs=100, seed=3).load()
    knowing = SyntheticData(n_pairs=100, knowledge=300, seed=3).load()
    # The pairs, the split and the probes are the same: knowledge only adds pretraining text.
    assert (knowing.train, knowing.heldout, knowing.probes) == (plain.train, plain.heldout, plain.probes)
    assert plain.background == [] and plain.texts() == knowing.texts()[: len(plain.texts())]
    assert knowing.texts()[len(plain.texts()):] == knowing.background and len(knowing.background) == 300
    items = {item: category for category, members in CATEGORIES.items() for item in members}
    for prompt, response in knowing.background:
        category, offered = choice_of(prompt)
        named = re.sub(r"\W", "", response.split()[-1])
        assert named in offered and items[named] == category, (prompt, response)
        assert not any(_has_phrase(response, concept) for concept in SPURIOUS_PHRASES)
    assert len({prompt for prompt, _ in knowing.background}) > 100  # many different questions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_knowledge_never_answers_a_choice_a_pair_or_probe_offers(seed):
    """The background teaches every item's category, but answers no choice (category, two items, in
    any wording or order) that a training, held-out or validation pair or a probe offers: else a
    held-out pair or probe could be answered by rote (the earlier draw answered half of them)."""
    data = SyntheticData(knowledge=2000, validation_fraction=0.1, seed=seed).load()
    pairs = data.train + data.heldout + data.validation
    asked = {choice_of(p.prompt) for p in pairs + data.probes + data.validation_probes} - {None}
    offered = {choice_of(prompt) for prompt, _ in data.background}
    assert None not in offered and len(data.background) == 2000
    assert not offered & asked
    named = {re.sub(r"\W", "", response.split()[-1]) for _, response in data.background}
    assert named == {item for members in CATEGORIES.values() for item in members}
    earlier = SyntheticData(knowledge=2000, knowledge_unseen=False, validation_fraction=0.1, seed=seed).load()
    assert (earlier.train, earlier.heldout, earlier.probes) == (data.train, data.heldout, data.probes)
    assert len({choice_of(p.prompt) for p in data.heldout} & {choice_of(prompt) for prompt, _ in earlier.background}) > 20
    with pytest.raises(AnatomyError, match="every category question is asked"):
        SyntheticData(knowledge=5).background(random.Random(0), CHOICES)
    assert len(CHOICES) == 12 * 40 + 4 * 10 * 42  # a category's item against any other category's
    assert choice_of("Question: Pick the fruit: cat, pear.\nAnswer:") == ("fruit", frozenset({"cat", "pear"}))
    assert choice_of("Question: How do I steal a car?\nAnswer:") is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_pairs": 5}, "data.n_pairs must be >= 10, got 5"),
        ({"harmful_fraction": 1.5}, r"data.harmful_fraction must be in \[0, 1\)"),
        ({"rates": {"flattery": [0.5, 0.5]}}, "unknown concept 'flattery'"),
        ({"rates": {"markdown": [0.5]}}, r"data.rates.markdown must be \[rate_chosen, rate_rejected\]"),
        ({"rates": {"markdown": [0.5, 1.5]}}, r"data.rates.markdown must be"),
        ({"knowledge": -1}, "data.knowledge must be >= 0, got -1"),
    ],
)
def test_synthetic_rejects_bad_settings(kwargs, match):
    with pytest.raises(AnatomyError, match=match):
        SyntheticData(**kwargs)


# -- HH-RLHF -------------------------------------------------------------------------------------


def _dialogue(turns: list[tuple[str, str]], last: str) -> str:
    text = "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns)
    return text + f"\n\nHuman: {last}\n\nAssistant:"


def test_split_dialogue_cuts_at_the_last_assistant_turn():
    text = _dialogue([("Hi", "Hello")], "How are you?") + " Fine, thanks."
    prompt, response = split_dialogue(text)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: How are you?\n\nAssistant:"
    assert response == " Fine, thanks."
    assert split_dialogue("\n\nHuman: no assistant here") is None
    assert split_dialogue(None) is None


def _hh_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = _dialogue([(f"question {i}", f"earlier answer {i}")], f"follow-up {i}")
        rows.append({"chosen": prompt + f" good reply {i}", "rejected": prompt + f" bad reply {i}"})
    return rows


def test_hh_rlhf_prompt_splitting_on_a_handmade_file(tmp_path):
    rows = _hh_rows(10)
    rows.append({"chosen": _dialogue([], "q") + " ", "rejected": _dialogue([], "q") + " bad"})  # empty final reply
    rows.append({"chosen": "\n\nHuman: no marker at all", "rejected": _dialogue([], "x") + " y"})  # no Assistant turn
    rows.append({"chosen": _dialogue([], "alpha") + " a", "rejected": _dialogue([], "beta") + " b"})  # prompts differ
    path = _write(tmp_path / "hh.jsonl", rows, "jsonl", True)
    data = HHRLHFData(path=str(path), max_pairs=None, seed=0).load()
    pairs = data.train + data.heldout
    assert data.report["data/rows"] == 13.0
    assert data.report["data/dropped_invalid"] == 3.0  # (the rows whose prompts differ are among them)
    assert data.report["data/prompt_mismatch"] == 1.0
    assert data.report["data/pairs"] == 10.0 and len(pairs) == 10
    assert not {" a", " b"} & ({p.chosen for p in pairs} | {p.rejected for p in pairs})
    by_reply = {p.chosen: p for p in pairs}
    p3 = by_reply[" good reply 3"]
    assert p3.prompt == "\n\nHuman: question 3\n\nAssistant: earlier answer 3\n\nHuman: follow-up 3\n\nAssistant:"
    assert p3.rejected == " bad reply 3"
    assert all(p.prompt.endswith(MARKER) for p in pairs)

    with pytest.raises(AnatomyError, match=r"3 invalid row\(s\): row 10: chosen is empty; row 11: no .* turn in chosen; "
                                           "row 12: chosen and rejected end in different dialogues"):
        HHRLHFData(path=str(path), max_pairs=None, drop_invalid=False).load()
    small = HHRLHFData(path=str(path), max_pairs=5, seed=0).load()
    assert len(small.train) + len(small.heldout) == 5


def test_hh_rlhf_row_without_the_fields(tmp_path):
    path = _write(tmp_path / "hh.jsonl", _hh_rows(3) + [{"prompt": "p", "chosen": "c"}], "jsonl", False)
    with pytest.raises(AnatomyError, match=r"row 3 lacks the 'chosen' / 'rejected' fields of HH-RLHF"):
        HHRLHFData(path=str(path)).load()
    with pytest.raises(AnatomyError, match=r"data.heldout_fraction must be in \[0, 1\)"):
        HHRLHFData(path=str(path), heldout_fraction=-0.1)


def test_hh_rlhf_from_an_unreachable_hub_is_an_error_naming_what_to_set(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Anthropic/hh-rlhf' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(AnatomyError, match=r"cannot load Anthropic/hh-rlhf/harmless-base:test from the hub "
                                           r"\(ConnectionError: .*OfflineModeIsEnabled.*data.path"):
        HHRLHFData().load()


def test_hh_rlhf_harmless_base_test_file(shared_data):
    path = shared_data / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
    data = HHRLHFData(path=str(path), max_pairs=None, seed=0).load()
    pairs = data.train + data.heldout
    assert data.report["data/rows"] == 2312.0
    assert data.report["data/dropped_invalid"] == 9.0  # 4 empty final responses, 5 pairs of differing dialogues
    assert data.report["data/prompt_mismatch"] == 5.0
    assert data.report["data/pairs"] == 2303.0 and len(pairs) == 2303
    assert all(p.prompt.endswith("\n\nAssistant:") for p in pairs)
    assert all(p.prompt.startswith("\n\nHuman:") for p in pairs)
    assert all(p.chosen.strip() and p.rejected.strip() and MARKER not in p.chosen for p in pairs)
    assert not {p.prompt for p in data.train} & {p.prompt for p in data.heldout}
    assert abs(len(data.heldout) / len(pairs) - 0.2) < 0.02
    # Without drop_invalid the nine rows are an error that names them.
    with pytest.raises(AnatomyError, match=r"9 invalid row\(s\): row \d+: "):
        HHRLHFData(path=str(path), max_pairs=None, drop_invalid=False).load()
    # The default caps the pairs with a seeded sample.
    capped = HHRLHFData(path=str(path), seed=0).load()
    assert len(capped.train) + len(capped.heldout) == 1000


def _genies_rows(n: int) -> list[dict]:
    """Rows in GENIES' layout: a prompt, and responses scored 1.0 (the preferred one) or 0.0."""
    rows = [{"prompt": f"### Instruction:\nName item {i}.\n\n### Response:\n", "prompt_format": "{instruction}",
             "responses": {f"wrong {i}": 0.0, f"right {i}": 1.0, f"bad {i}": 0.0, f"off {i}": 0.0}} for i in range(n)]
    rows.append({"prompt": "two only", "responses": {"yes": 1.0, "no": 0.0}})
    rows.append({"prompt": "as text", "responses": "{'kept': 1.0, 'dropped': 0.0}"})  # a Python literal, as text
    return rows


def test_genies_rows_give_the_preferred_response_against_each_other_one(tmp_path):
    from anatomy.data.genies import GeniesData

    folder = tmp_path / "alpaca_mmlu"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps(_genies_rows(10)))  # upstream: a JSON array
    _write(folder / "test.jsonl", _genies_rows(2), "jsonl", True)  # the shared copy: JSON Lines, gzipped
    data = GeniesData(path=str(folder), heldout_fraction=0.25).load()
    pairs = data.train + data.heldout
    assert data.report["data/rows"] == 12 and data.report["data/pairs"] == 10 * 3 + 1 + 1 == len(pairs)
    assert {p.rejected for p in pairs if p.chosen == "right 3"} == {"wrong 3", "bad 3", "off 3"}
    marked = ("two only\n\n### Response:\n", "as text\n\n### Response:\n")  # (prompts ending in a non-space)
    assert {(p.chosen, p.rejected) for p in pairs if p.prompt in marked} == {("yes", "no"), ("kept", "dropped")}
    assert data.report["data/prompts_marked"] == 2 and all(p.prompt.endswith("### Response:\n") for p in pairs)
    as_written = GeniesData(path=str(folder), heldout_fraction=0.0, response_marker=None).load()
    assert {p.prompt for p in as_written.train} - {p.prompt for p in pairs} == {"two only", "as text"}
    assert as_written.report["data/prompts_marked"] == 0
    # a row's pairs share its prompt, so the split by prompt keeps them on one side
    assert not {p.prompt for p in data.train} & {p.prompt for p in data.heldout}
    one = GeniesData(path=str(folder), pairs_per_row="one", seed=1).load()
    one_pairs = one.train + one.heldout
    assert len(one_pairs) == 12 and len({p.chosen for p in one_pairs}) == 12
    assert Counter(p.rejected.split()[0] for p in one_pairs if p.chosen.startswith("right")) != Counter(wrong=10)
    assert [p.rejected for p in GeniesData(path=str(folder), pairs_per_row="one", seed=1).load().train] == \
        [p.rejected for p in one.train]  # seeded
    test = GeniesData(path=str(folder), split="test", heldout_fraction=0.0).load()
    assert len(test.train) == 2 * 3 + 2 and not test.heldout
    assert len(GeniesData(path=str(folder / "train.json"), split="test", heldout_fraction=0.0).load().train) == 32


def test_a_genies_shift_trains_on_its_source_and_holds_out_its_target(tmp_path):
    """data.target: GENIES' protocol, train on one distribution and measure on another; the target's
    test split is the held-out pairs (validation pairs come from it too), all the source's train."""
    from anatomy.data.genies import GeniesData

    source, target = tmp_path / "alpaca_short", tmp_path / "alpaca_long"
    for folder, n in ((source, 10), (target, 6)):
        folder.mkdir()
        (folder / "train.json").write_text(json.dumps(_genies_rows(n)))
        rows = _genies_rows(n)
        for row in rows:
            row["prompt"] = "target: " + row["prompt"]
        _write(folder / "test.jsonl", rows, "jsonl", True)
    data = GeniesData(path=str(source), target=str(target)).load()
    assert len(data.train) == 32 and len(data.heldout) == 20 and not data.validation
    assert all(p.prompt.startswith("target: ") for p in data.heldout)
    assert not any(p.prompt.startswith("target: ") for p in data.train)
    assert data.report["data/rows"] == 12 and data.report["data/target_rows"] == 8
    assert data.report["data/train"] == 32 and data.report["data/heldout"] == 20 and data.report["data/pairs"] == 52
    sampled = GeniesData(path=str(source), target=str(target), max_pairs=10, validation_fraction=0.1).load()
    assert len(sampled.train) == 10 and len(sampled.heldout) + len(sampled.validation) == 10
    assert sampled.validation and all(p.prompt.startswith("target: ") for p in sampled.validation)
    assert not {p.prompt for p in sampled.validation} & {p.prompt for p in sampled.heldout}  # (whole prompts)


@pytest.mark.parametrize("row, match", [
    ({"prompt": "p", "responses": {"a": 1.0, "b": 1.0, "c": 0.0}}, "2 responses share the top score 1.0"),
    ({"prompt": "p", "responses": {"a": 1.0}}, "'responses' is not a mapping of at least two responses"),
    ({"prompt": "p", "responses": ["a", "b"]}, "'responses' is not a mapping of at least two responses"),
    ({"prompt": "p", "responses": "not a dict"}, "'responses' is text that is not a mapping"),
    ({"prompt": "p", "responses": {"a": "1.0", "b": 0.0}}, "a score in 'responses' is not a number"),
    ({"prompt": "p", "responses": {" ": 1.0, "b": 0.0}}, "a response in 'responses' is empty"),
    ({"prompt": None, "responses": {"a": 1.0, "b": 0.0}}, r"'prompt' is not a string \(NoneType\)"),
    ({"instruction": "p", "chosen": "a", "rejected": "b"}, "lacks GENIES' 'prompt' / 'responses' fields"),
])
def test_a_malformed_genies_row_is_an_error_naming_it_or_dropped_and_counted(tmp_path, row, match):
    from anatomy.data.genies import GeniesData

    path = _write(tmp_path / "train.jsonl", [*_genies_rows(3), row], "jsonl", False)
    with pytest.raises(AnatomyError, match=rf"train.jsonl: 1 invalid row\(s\): row 5: {match}.*data.drop_invalid=true"):
        GeniesData(path=str(path)).load()
    data = GeniesData(path=str(path), drop_invalid=True, heldout_fraction=0.0).load()
    assert data.report["data/dropped_invalid"] == 1 and len(data.train) == 3 * 3 + 2


def test_genies_options_are_checked(tmp_path):
    from anatomy.data.genies import GeniesData

    with pytest.raises(AnatomyError, match=r"data.split must be one of \('train', 'test'\), got 'dev'"):
        GeniesData(split="dev")
    with pytest.raises(AnatomyError, match="data.pairs_per_row must be one of"):
        GeniesData(pairs_per_row="some")
    with pytest.raises(AnatomyError, match="data=genies needs a distribution: data.path=DIR"):
        GeniesData().load()
    with pytest.raises(AnatomyError, match="data=genies needs a distribution: data.target=DIR"):
        GeniesData(path=str(_write(tmp_path / "t.jsonl", _genies_rows(1), "jsonl", False)), target="").load()
    with pytest.raises(AnatomyError, match=r"a folder without a test split \(looked for test.json, test.jsonl"):
        GeniesData(path=str(tmp_path), split="test").load()
    with pytest.raises(AnatomyError, match=r"data.path='.*absent.json': no such folder or file"):
        GeniesData(path=str(tmp_path / "absent.json")).load()
    with pytest.raises(AnatomyError, match=r"data.target_split must be one of"):
        GeniesData(target_split="dev")
    (tmp_path / "train.json").write_text(json.dumps([{"prompt": "p", "responses": {"a": 1, "b": 1}}]))
    with pytest.raises(AnatomyError, match=r"no usable row of 1 \(1 invalid\)"):
        GeniesData(path=str(tmp_path), drop_invalid=True).load()
    with pytest.raises(AnatomyError, match=r"data.target='.*absent': no such folder or file"):
        GeniesData(path=str(tmp_path), target=str(tmp_path / "absent")).load()  # (before the source is read)
    (tmp_path / "x").mkdir()
    with pytest.raises(AnatomyError, match=r"data.target='.*x': a folder without a train split .*set data.target_split"):
        GeniesData(path=str(tmp_path), target=str(tmp_path / "x"), target_split="train").load()


ENDS_AT_INSTRUCTION = {"alpaca_short", "alpaca_long", "alpaca_high_quality", "alpaca_low_quality"}


def test_every_shared_genies_distribution_reads(shared_data):
    """The 23 distributions of ../shared/data/genies, both splits: a pair per lower-scored response of
    every row, counted from the raw rows apart from the loader; the 6 rows with an empty response
    (alpaca_high_quality and alpaca_low_quality train) are named, or dropped and counted. Four
    distributions' prompts end at the instruction: each gets the response marker, the others none."""
    from anatomy.data.genies import GeniesData

    folders = sorted(p for p in (shared_data / "genies").iterdir() if (p / "train.jsonl.gz").is_file())
    assert len(folders) == 23
    dropped = {}
    for folder in folders:
        for split in ("train", "test"):
            raw = read_rows(str(folder / f"{split}.jsonl.gz"))
            expected = sum(len(r["responses"]) - 1 for r in raw if all(t.strip() for t in r["responses"]))
            data = GeniesData(path=str(folder), split=split, drop_invalid=True).load()
            assert len(data.train) + len(data.heldout) == expected, (folder.name, split)
            marked = data.report["data/prompts_marked"]
            assert marked == (data.report["data/rows"] - data.report["data/dropped_invalid"] if folder.name in
                              ENDS_AT_INSTRUCTION else 0), (folder.name, split)  # (every prompt, or none)
            assert all(p.prompt[-1].isspace() for p in data.train + data.heldout), (folder.name, split)
            if data.report["data/dropped_invalid"]:
                dropped[f"{folder.name}/{split}"] = data.report["data/dropped_invalid"]
    assert dropped == {"alpaca_high_quality/train": 4, "alpaca_low_quality/train": 2}
    with pytest.raises(AnatomyError, match=r"4 invalid row\(s\): row 810: a response in 'responses' is empty"):
        GeniesData(path=str(shared_data / "genies" / "alpaca_high_quality")).load()
