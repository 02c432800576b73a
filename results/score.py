"""Score a submission the way Kaggle scores this competition: categorization accuracy.

``python -m results.score SUBMISSION [--answers FILE]`` prints the share of test Ids whose
Category matches the answer. Without ``--answers``, a submission for the embedded digits is
scored against the digits' answers file, which the search never reads.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from trainable.cli import ArgumentParser, UserError, run_main

COLUMNS = ["Id", "Category"]
MAX_LISTED_ROWS = 10


class SubmissionError(UserError):
    """A submission or answers file that cannot be scored.

    The first line says what is wrong; a list of offending rows may follow on later lines.
    """


@dataclass(frozen=True)
class Score:
    accuracy: float
    correct: int
    total: int


def read_id_category_csv(path: Path, role: str) -> pd.DataFrame:
    """Read an ``Id,Category`` CSV as strings, with the 1-based file line of each row.

    ``role`` ("submission" or "answers") names the file in errors.
    """
    try:
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
    except FileNotFoundError:
        raise SubmissionError(f"{role} file {path} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{role} file {path} cannot be read: {err}") from None
    if not rows or [cell.strip() for cell in rows[0]] != COLUMNS:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise SubmissionError(
            f"{role} file {path} must start with the header Id,Category, found {found!r}"
        )

    records = []
    bad_width = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            bad_width.append(f"  line {line}: {','.join(row)!r} has {len(row)} fields")
            continue
        records.append((line, row[0].strip(), row[1].strip()))
    if bad_width:
        first_line = f"{role} file {path} has {len(bad_width)} rows without exactly 2 fields"
        raise SubmissionError(_listed(first_line, bad_width))
    return pd.DataFrame.from_records(records, columns=["line", "Id", "Category"])


def check_answers(answers: pd.DataFrame, path: Path) -> None:
    """Raise SubmissionError unless the answers have unique Ids and integer Categories."""
    problems = [
        problem for problem in _duplicate_and_category_problems(answers) if problem is not None
    ]
    if problems:
        raise SubmissionError(f"answers file {path} is invalid:\n" + "\n".join(problems))


def submission_problems(submission: pd.DataFrame, answers: pd.DataFrame) -> list[str]:
    """Return one message per kind of problem: missing, extra or duplicate Ids, bad categories.

    Each message has a first line with the count and then the offending rows, at most
    MAX_LISTED_ROWS of them.
    """
    duplicates, categories = _duplicate_and_category_problems(submission)
    problems = [duplicates] if duplicates else []
    expected = set(answers["Id"])

    extra = submission[~submission["Id"].isin(expected)]
    if not extra.empty:
        rows = [f"  line {row.line}: Id {row.Id!r}" for row in extra.itertuples()]
        problems.append(_listed(f"{len(extra)} rows have an Id that is not a test Id", rows))

    missing = sorted(expected - set(submission["Id"]))
    if missing:
        rows = [f"  Id {value!r}" for value in missing]
        problems.append(_listed(f"{len(missing)} test Ids are missing", rows))

    if categories:
        problems.append(categories)
    return problems


def _duplicate_and_category_problems(table: pd.DataFrame) -> tuple[str | None, str | None]:
    """Return the messages for duplicate Ids and for non-integer Categories, None if fine."""
    duplicates = categories = None
    duplicated = table[table["Id"].duplicated(keep=False)]
    if not duplicated.empty:
        rows = [f"  line {row.line}: Id {row.Id!r}" for row in duplicated.itertuples()]
        count = duplicated["Id"].nunique()
        duplicates = _listed(f"{count} Ids appear more than once", rows)

    not_integer = table[~table["Category"].str.fullmatch(r"[+-]?\d+")]
    if not not_integer.empty:
        rows = [
            f"  line {row.line}: Id {row.Id!r} has Category {row.Category!r}"
            for row in not_integer.itertuples()
        ]
        categories = _listed(f"{len(not_integer)} Categories are not integers", rows)
    return duplicates, categories


def score_submission(submission: pd.DataFrame, answers: pd.DataFrame) -> Score:
    """Return the categorization accuracy of a valid submission against the answers."""
    merged = answers.merge(submission, on="Id", suffixes=("_answer", "_submitted"))
    answered = merged["Category_answer"].map(int)
    submitted = merged["Category_submitted"].map(int)
    correct = int((answered == submitted).sum())
    total = len(answers)
    return Score(correct / total if total else 0.0, correct, total)


def find_digits_answers(submission: pd.DataFrame) -> Path | None:
    """Return the digits' answers file if the submission is for the embedded digits, else None.

    The submission counts as a digits submission when most of its Ids are digits test Ids, so
    a digits submission with a few wrong Ids is still checked against the digits answers.
    """
    from trainable.data import digits_answers_path

    path = digits_answers_path()
    answer_ids = set(pd.read_csv(path, dtype=str)["Id"])
    known = submission["Id"].isin(answer_ids).sum()
    return path if len(submission) and known * 2 > len(submission) else None


def _listed(first_line: str, rows: list[str]) -> str:
    shown = rows[:MAX_LISTED_ROWS]
    more = len(rows) - len(shown)
    lines = [first_line, *shown]
    if more:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m results.score",
        description="Print the categorization accuracy of a submission.csv (Id,Category).",
    )
    parser.add_argument("submission", type=Path, help="the submission.csv to score")
    parser.add_argument(
        "--answers",
        type=Path,
        metavar="FILE",
        help="the test answers as Id,Category; default: the embedded digits' answers, "
        "when the submission is for the digits",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    submission = read_id_category_csv(args.submission, "submission")
    answers_path = args.answers or find_digits_answers(submission)
    if answers_path is None:
        raise SubmissionError(
            f"no answers for {args.submission}: its Ids are not the digits test Ids; "
            "pass the test answers with --answers FILE"
        )
    answers = read_id_category_csv(answers_path, "answers")
    check_answers(answers, answers_path)

    problems = submission_problems(submission, answers)
    if problems:
        raise SubmissionError(
            f"submission {args.submission} is invalid against {answers_path} "
            f"({len(problems)} kind{'s' if len(problems) != 1 else ''} of problem):\n"
            + "\n".join(problems)
        )
    score = score_submission(submission, answers)
    print(f"accuracy {score.accuracy:.5f} ({score.correct} of {score.total} test images correct)")
    return 0


if __name__ == "__main__":
    run_main(main)
