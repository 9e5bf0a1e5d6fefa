"""MovieLens loader: ratings -> per-user chronological movie sequences, three file layouts.

data_dir must hold exactly one of these layouts (files of the others absent):
  ml-100k   u.data   tab-separated, no header: user id, item id, rating, timestamp (integers,
                     unix seconds).
            u.item   `|`-separated, no header, latin-1: movie id | title | release date |
                     video release date | IMDb URL | one 0/1 flag per genre (19).
            u.genre  optional, `|`-separated, latin-1: genre name | column index (0..18); the
                     standard 19 names are used when it is absent.
  ml-1m     ratings.dat  `UserID::MovieID::Rating::Timestamp`, integers, no header.
            movies.dat   `MovieID::Title::Genres`, latin-1, genres `|`-separated.
            (ml-10m's files have the same format and load the same way.)
  RecBole   exactly one NAME.inter and NAME.item (RecBole's atomic files, e.g. ml-100k.inter),
            tab-separated, UTF-8, with a typed header line such as
            `user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float` and
            `item_id:token<TAB>movie_title:token_seq<TAB>release_year:token<TAB>class:token_seq`.
            Columns are found by header name, not position: .inter needs user_id and item_id,
            rating and timestamp are used when present; .item needs item_id and uses
            movie_title (or title), release_year (or year) and class (or genre), where class
            holds space-separated genres.

Item = movie (key: the movie id as written). Attributes `title; genre; year`:
  title  the title without a trailing "(1995)"-style year.
  genre  the movie's genres joined with ", ", in the order the source lists them.
  year   the trailing "(YYYY)" of the title, else the year of the release date / release_year
         field, else "unknown".
A movie without a line in the item file is "unknown" throughout. A user's sequence is their
ratings sorted by timestamp (ties keep file order; file order when RecBole has no timestamp).
Ratings are kept.
"""

from __future__ import annotations

import glob
import os
import re

from jaxrec.data.dataset import Dataset
from jaxrec.data.interactions import from_interactions
from jaxrec.data.loaders._common import (UNKNOWN, clean_text, find_file, iter_lines,
                                         read_int_columns, require_dir, split_fields, to_float,
                                         to_int)
from jaxrec.errors import DataError

ATTRIBUTES = ("title", "genre", "year")
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")
U_ITEM_FIELDS = ("movie id", "title", "release date", "video release date", "IMDb URL")
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_YEAR = re.compile(r"(\d{4})$")


def load(data_dir: str) -> Dataset:
  """Reads the MovieLens layout found in data_dir into the raw (unfiltered) Dataset."""
  require_dir(data_dir, "movielens")
  inter = sorted(glob.glob(os.path.join(glob.escape(data_dir), "*.inter")))
  found = [name for name, present in (
      ("ml-100k (u.data)", os.path.isfile(os.path.join(data_dir, "u.data"))),
      ("ml-1m (ratings.dat)", os.path.isfile(os.path.join(data_dir, "ratings.dat"))),
      ("RecBole (*.inter)", bool(inter))) if present]
  if not found:
    raise DataError(f"{data_dir}: no MovieLens files; expected u.data + u.item (ml-100k), "
                    f"ratings.dat + movies.dat (ml-1m) or NAME.inter + NAME.item (RecBole)")
  if len(found) > 1:
    raise DataError(f"{data_dir}: several MovieLens layouts ({', '.join(found)}); keep one")
  if found[0].startswith("ml-100k"):
    return _load_100k(data_dir)
  if found[0].startswith("ml-1m"):
    return _load_1m(data_dir)
  if len(inter) > 1:
    raise DataError(f"{data_dir}: expected one *.inter file, found {len(inter)}")
  return _load_recbole(inter[0])


def _build(users, items, item_text, times, ratings, source: str) -> Dataset:
  return from_interactions(
      "movielens", scenario="movie", item_noun="movie", behavior="rating",
      attribute_names=ATTRIBUTES, users=users, items=items, item_text=item_text,
      times=times, ratings=ratings, source=source)


def _text(title: str, genres: list[str], year_field: str) -> tuple[str, str, str]:
  """(title, genre, year) from a raw title, genre names and a date/year fallback."""
  title = clean_text(title)
  match = _TITLE_YEAR.match(title)
  if match:
    title, year = clean_text(match.group(1)), match.group(2)
  else:
    fallback = _YEAR.search(year_field.strip())
    year = fallback.group(1) if fallback else UNKNOWN
  genre = ", ".join(g for g in (clean_text(g) for g in genres) if g != UNKNOWN) or UNKNOWN
  return title, genre, year


# --- ml-100k ---------------------------------------------------------------------------------
def _load_100k(data_dir: str) -> Dataset:
  data_path, item_path = find_file(data_dir, "u.data"), find_file(data_dir, "u.item")
  genre_path = os.path.join(data_dir, "u.genre")
  genres = _read_genres(genre_path) if os.path.isfile(genre_path) else GENRES_100K
  ratings = read_int_columns(data_path, ("user id", "item id", "rating", "timestamp"))
  fields = U_ITEM_FIELDS + genres
  item_text = {}
  for lineno, line in iter_lines(item_path, "latin-1"):
    row = split_fields(item_path, lineno, line, "|", fields, "|")
    key = str(to_int(item_path, lineno, "movie id", row[0]))
    flags = row[len(U_ITEM_FIELDS):]
    for name, flag in zip(genres, flags):
      if flag not in ("0", "1"):
        raise DataError(f"{item_path}:{lineno}: field {name}: expected a 0/1 genre flag, "
                        f"got {flag!r}")
    text = _text(row[1], [g for g, flag in zip(genres, flags) if flag == "1"], row[2])
    item_text.setdefault(key, text)
  return _build(ratings[:, 0], ratings[:, 1], item_text, ratings[:, 3], ratings[:, 2],
                data_path)


def _read_genres(path: str) -> tuple[str, ...]:
  names = []
  for lineno, line in iter_lines(path, "latin-1"):
    name, index = split_fields(path, lineno, line, "|", ("genre", "index"), "|")
    if to_int(path, lineno, "index", index) != len(names):
      raise DataError(f"{path}:{lineno}: field index: expected {len(names)} (genres listed in "
                      f"column order), got {index!r}")
    names.append(name)
  if not names:
    raise DataError(f"{path}: no genres (expected lines `name|index`)")
  return tuple(names)


# --- ml-1m -----------------------------------------------------------------------------------
def _load_1m(data_dir: str) -> Dataset:
  ratings_path, movies_path = find_file(data_dir, "ratings.dat"), find_file(data_dir, "movies.dat")
  ratings = read_int_columns(ratings_path, ("UserID", "MovieID", "Rating", "Timestamp"),
                             sep=b"::", sep_name="'::'")
  item_text = {}
  for lineno, line in iter_lines(movies_path, "latin-1"):
    row = line.split("::")
    if len(row) < 3:
      raise DataError(f"{movies_path}:{lineno}: expected 3 '::'-separated fields "
                      f"(MovieID, Title, Genres), got {len(row)}")
    key = str(to_int(movies_path, lineno, "MovieID", row[0]))
    genres = [] if row[-1].strip() == "(no genres listed)" else row[-1].split("|")
    # A title containing "::" is rejoined: the id is the first field, genres the last.
    item_text.setdefault(key, _text("::".join(row[1:-1]), genres, ""))
  return _build(ratings[:, 0], ratings[:, 1], item_text, ratings[:, 3], ratings[:, 2],
                ratings_path)


# --- RecBole atomic files --------------------------------------------------------------------
def _load_recbole(inter_path: str) -> Dataset:
  item_path = find_file(os.path.dirname(inter_path),
                        os.path.basename(inter_path)[:-len(".inter")] + ".item")
  users, items, times, ratings = [], [], [], []
  lines = iter_lines(inter_path, "utf-8")
  col = _header(inter_path, lines, required=("user_id", "item_id"))
  names = tuple(col)
  for lineno, line in lines:
    row = split_fields(inter_path, lineno, line, "\t", names, "tab")
    users.append(_token(inter_path, lineno, "user_id", row[col["user_id"]]))
    items.append(_token(inter_path, lineno, "item_id", row[col["item_id"]]))
    if "rating" in col:
      ratings.append(to_float(inter_path, lineno, "rating", row[col["rating"]]))
    if "timestamp" in col:
      times.append(int(to_float(inter_path, lineno, "timestamp", row[col["timestamp"]])))
  item_text = _read_recbole_items(item_path)
  return _build(users, items, item_text, times if "timestamp" in col else None,
                ratings if "rating" in col else None, inter_path)


def _read_recbole_items(path: str) -> dict[str, tuple[str, str, str]]:
  lines = iter_lines(path, "utf-8")
  col = _header(path, lines, required=("item_id",))
  names = tuple(col)
  title_col = next((col[f] for f in ("movie_title", "title") if f in col), None)
  year_col = next((col[f] for f in ("release_year", "year") if f in col), None)
  genre_col = next((col[f] for f in ("class", "genre", "genres") if f in col), None)
  item_text = {}
  for lineno, line in lines:
    row = split_fields(path, lineno, line, "\t", names, "tab")
    key = _token(path, lineno, "item_id", row[col["item_id"]])
    get = lambda c: "" if c is None else row[c]  # noqa: E731 - absent column reads as empty
    item_text.setdefault(key, _text(get(title_col), get(genre_col).split(), get(year_col)))
  return item_text


def _header(path: str, lines, required: tuple[str, ...]) -> dict[str, int]:
  """Field name -> column of a RecBole typed header (`name:type` tab-separated)."""
  first = next(lines, None)
  if first is None:
    raise DataError(f"{path}: empty file, expected a typed header line "
                    f"({', '.join(f + ':token' for f in required)}, ...)")
  lineno, line = first
  col = {}
  for j, field in enumerate(line.split("\t")):
    name = field.partition(":")[0].strip()
    if not name or name in col:
      raise DataError(f"{path}:{lineno}: header column {j + 1}: empty or repeated name "
                      f"{field!r}")
    col[name] = j
  for name in required:
    if name not in col:
      found = ", ".join(c if c.isprintable() else repr(c) for c in col)  # keep it one line
      raise DataError(f"{path}:{lineno}: header has no {name} field (found: {found})")
  return col


def _token(path: str, lineno: int, field: str, value: str) -> str:
  value = value.strip()
  if not value:
    raise DataError(f"{path}:{lineno}: field {field}: empty")
  return value
