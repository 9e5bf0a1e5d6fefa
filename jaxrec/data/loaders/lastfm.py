"""Last.fm LFM-1b loader: listening events -> one chronological track sequence per user.

Files in data_dir, all tab-separated, no header, UTF-8. Each may instead be gzipped as
`NAME.gz` (when both exist the plain file is read):
  LFM-1b_LEs.txt      user-id, artist-id, album-id, track-id, timestamp   (integers; unix seconds)
  LFM-1b_tracks.txt   track-id, track-name, artist-id
  LFM-1b_albums.txt   album-id, album-name, artist-id
  LFM-1b_artists.txt  artist-id, artist-name

Item = track (key: the track-id). Attributes `title; album; artist`:
  title   the track's name in LFM-1b_tracks.txt.
  album   the name of the album-id of the track's first event in file order. Events carry the
          album, the track table does not, and one track can appear on several albums.
  artist  the name of the artist-id of that same event.
Each attribute whose id is missing from its name table is "unknown" on its own.
A user's sequence is their events sorted by timestamp (ties keep file order); repeated listens
of a track are kept as separate interactions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.data.interactions import from_interactions
from jaxrec.data.loaders._common import (UNKNOWN, clean_text, find_file, iter_lines,
                                         read_int_columns, require_dir, split_fields, to_int)

EVENTS = "LFM-1b_LEs.txt"
TRACKS = "LFM-1b_tracks.txt"
ALBUMS = "LFM-1b_albums.txt"
ARTISTS = "LFM-1b_artists.txt"
EVENT_FIELDS = ("user-id", "artist-id", "album-id", "track-id", "timestamp")
TRACK_FIELDS = ("track-id", "track-name", "artist-id")
ALBUM_FIELDS = ("album-id", "album-name", "artist-id")
ARTIST_FIELDS = ("artist-id", "artist-name")
ATTRIBUTES = ("title", "album", "artist")


def load(data_dir: str) -> Dataset:
  """Reads the LFM-1b files in data_dir into the raw (unfiltered) Dataset."""
  require_dir(data_dir, "lastfm")
  # Locate every file before the long event read, so a missing table fails at once.
  events_path, tracks_path, albums_path, artists_path = (
      find_file(data_dir, name, gz=True) for name in (EVENTS, TRACKS, ALBUMS, ARTISTS))
  events = read_int_columns(events_path, EVENT_FIELDS)
  user, artist, album, track, timestamp = events.T
  tracks, first = np.unique(track, return_index=True)
  first_album, first_artist = album[first], artist[first]
  # Name tables hold tens of millions of rows; keep only the ids the events use.
  track_names = _read_names(tracks_path, TRACK_FIELDS, set(tracks.tolist()))
  album_names = _read_names(albums_path, ALBUM_FIELDS, set(first_album.tolist()))
  artist_names = _read_names(artists_path, ARTIST_FIELDS, set(first_artist.tolist()))
  item_text = {
      str(t): (track_names.get(t, UNKNOWN), album_names.get(a, UNKNOWN),
               artist_names.get(r, UNKNOWN))
      for t, a, r in zip(tracks.tolist(), first_album.tolist(), first_artist.tolist())
  }
  return from_interactions(
      "lastfm", scenario="music streaming", item_noun="track", behavior="listening",
      attribute_names=ATTRIBUTES, users=user, items=track, item_text=item_text,
      times=timestamp, source=events_path)


def _read_names(path: str, fields: Sequence[str], needed: set[int]) -> dict[int, str]:
  """id -> name (field 2) for the ids in `needed`; the first row of a repeated id wins."""
  names: dict[int, str] = {}
  for lineno, line in iter_lines(path, "utf-8"):
    row = split_fields(path, lineno, line, "\t", fields, "tab")
    key = to_int(path, lineno, fields[0], row[0])
    if key in needed and key not in names:
      names[key] = clean_text(row[1])
  return names
