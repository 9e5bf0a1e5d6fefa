"""The built-in synthetic dataset: deterministic per seed, shaped like a real catalog.

Generative story (all NumPy, one `np.random.Generator` from the seed):
- `num_genres` item clusters with centroids in R^dim; each item gets a genre, an embedding
  (its centroid plus noise), a brand (each genre draws its items mostly from a few brands) and a
  Zipf popularity weight (long tail, exponent `zipf`).
- Each user has a taste vector: a Dirichlet mixture of 1-3 genre centroids.
- Sequences: the next item is drawn with probability proportional to
  popularity^pop_weight * exp(<taste_t, item> / temperature), and the taste drifts towards the
  items just consumed (`drift`), with an occasional jump to a new favourite genre (`jump_prob`):
  the sequential signal a SASRec-style user model can learn.
- Ratings 1-5 are the standardised taste score of the consumed item plus noise, rounded around
  3.5 (so they depend on the user and the item, not only the item); times are ordinals
  (each user starts at a random time and consumes one item per tick), so both splits work.
- Item text: "<Adjective> <Noun> <n>" titles, genre names and brand names from word lists.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError

_ADJECTIVES = (
    "Silent", "Golden", "Electric", "Hidden", "Broken", "Wild", "Velvet", "Crimson", "Lonely",
    "Frozen", "Burning", "Gentle", "Midnight", "Northern", "Paper", "Hollow", "Bright", "Quiet",
    "Restless", "Silver", "Distant", "Neon", "Ancient", "Secret", "Little", "Endless", "Savage",
    "Sweet", "Iron", "Crystal",
)
_NOUNS = (
    "River", "Engine", "Garden", "Mirror", "Harbor", "Signal", "Lantern", "Forest", "Voyage",
    "Circuit", "Orchard", "Canyon", "Anthem", "Compass", "Machine", "Horizon", "Tide", "Meadow",
    "Echo", "Citadel", "Falcon", "Ember", "Atlas", "Comet", "Prairie", "Ledger", "Beacon",
    "Thunder", "Willow", "Kernel",
)
_GENRES = (
    "jazz", "ambient", "punk", "folk", "techno", "classical", "hip hop", "blues", "metal",
    "reggae", "soul", "country", "disco", "opera", "grunge", "bossa nova", "synthwave", "gospel",
    "ska", "trance",
)
_BRANDS = (
    "Acme Records", "Blue Note House", "Northwind", "Parlophonic", "Starlight", "Redwood",
    "Atlantic Drift", "Copperline", "Lumen", "Oakhurst", "Riverside", "Sunburst", "Tundra",
    "Vertex", "Wavelength", "Zephyr", "Harbor Lights", "Kestrel", "Monarch", "Nimbus",
    "Obsidian", "Pioneer Sound", "Quarry", "Solstice",
)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Sizes and knobs of the generator; the defaults are the README's main-job preset."""
  num_users: int = 2000
  num_items: int = 1000
  num_genres: int = 12
  dim: int = 16
  mean_length: float = 20.0
  min_length: int = 5
  max_length: int = 60
  zipf: float = 1.1
  pop_weight: float = 0.3
  temperature: float = 0.1
  drift: float = 0.3
  jump_prob: float = 0.05
  item_noise: float = 0.5
  rating_noise: float = 0.5
  seed: int = 0

  def validate(self) -> None:
    positive = ("num_users", "num_items", "num_genres", "dim", "min_length", "max_length")
    for f in positive:
      if getattr(self, f) <= 0:
        raise DataError(f"synthetic: {f} must be positive, got {getattr(self, f)}")
    if self.num_genres > len(_GENRES):
      raise DataError(f"synthetic: num_genres must be <= {len(_GENRES)}, got {self.num_genres}")
    # Lengths are clipped to [min_length, max_length]: a mean outside it cannot be honoured
    # (the chained comparison is also false for NaN).
    if not self.min_length <= self.mean_length <= self.max_length:
      raise DataError(f"synthetic: need min_length <= mean_length <= max_length, got "
                      f"{self.min_length}, {self.mean_length}, {self.max_length}")
    if self.num_items < max(self.num_genres, 2):
      # Two items at least: with one, "never the same item twice in a row" cannot hold.
      raise DataError(f"synthetic: num_items must be >= max(num_genres, 2), got "
                      f"{self.num_items} with num_genres={self.num_genres}")


@dataclasses.dataclass(frozen=True)
class SyntheticTruth:
  """The latent variables behind a generated dataset (for tests of fitted user models)."""
  item_genre: np.ndarray  # [I] int
  item_emb: np.ndarray  # [I, dim]
  user_taste: np.ndarray  # [U, dim] taste at the start of each sequence
  popularity: np.ndarray  # [I] sampling weight, sums to 1
  ratings: np.ndarray  # [U, I] float32 the expected rating of every pair (the ground-truth
  #                      matrix of the peer protocol): the logged ratings' rule without noise
  #                      or rounding, clip(3.5 + z, 1, 5), at each user's starting taste


def generate_with_truth(cfg: SyntheticConfig = SyntheticConfig()) -> tuple[Dataset, SyntheticTruth]:
  cfg.validate()
  rng = np.random.default_rng(cfg.seed)
  n_u, n_i, g, d = cfg.num_users, cfg.num_items, cfg.num_genres, cfg.dim

  centroids = rng.normal(size=(g, d))
  centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
  # Every genre gets at least one item; the rest at random with uneven genre sizes.
  genre_sizes = rng.dirichlet(np.full(g, 2.0))
  item_genre = np.concatenate([np.arange(g), rng.choice(g, size=n_i - g, p=genre_sizes)])
  rng.shuffle(item_genre)
  emb = centroids[item_genre] + cfg.item_noise * rng.normal(size=(n_i, d)) / np.sqrt(d)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  pop = 1.0 / np.arange(1, n_i + 1) ** cfg.zipf
  pop = pop[rng.permutation(n_i)]
  pop /= pop.sum()
  log_prior = cfg.pop_weight * np.log(pop)

  brands_per_genre = rng.choice(len(_BRANDS), size=(g, 3), replace=True)
  brand = brands_per_genre[item_genre, rng.integers(0, 3, size=n_i)]
  words = rng.integers(0, [len(_ADJECTIVES), len(_NOUNS)], size=(n_i, 2))
  item_text = np.array([
      (f"{_ADJECTIVES[a]} {_NOUNS[b]} {i + 1}", _GENRES[item_genre[i]], _BRANDS[brand[i]])
      for i, (a, b) in enumerate(words)], dtype=str)

  # Users: a Dirichlet mix over 1-3 favourite genres (at most num_genres; for 3 or more genres
  # the draws are the same as with a fixed 3, so existing seeds keep their data).
  k = min(3, g)
  n_fav = rng.integers(1, k + 1, size=n_u)
  fav = np.stack([rng.permutation(g)[:k] for _ in range(n_u)])
  mix = rng.dirichlet(np.ones(k), size=n_u) * (np.arange(k)[None, :] < n_fav[:, None])
  mix /= mix.sum(axis=1, keepdims=True)
  taste = np.einsum("uk,ukd->ud", mix, centroids[fav])
  taste /= np.linalg.norm(taste, axis=1, keepdims=True)
  start_taste = taste.copy()

  lengths = np.clip(cfg.min_length + rng.geometric(1.0 / max(cfg.mean_length - cfg.min_length + 1,
                                                             1.0), size=n_u) - 1,
                    cfg.min_length, cfg.max_length)
  seq = np.full((n_u, cfg.max_length), -1, np.int64)
  score_at = np.zeros((n_u, cfg.max_length))
  for t in range(cfg.max_length):
    logits = taste @ emb.T / cfg.temperature + log_prior
    # Never the same item twice in a row: recommenders and the env's quit rule both care.
    if t > 0:
      logits[np.arange(n_u), seq[:, t - 1]] = -np.inf
    gumbel = rng.gumbel(size=logits.shape)
    item = np.argmax(logits + gumbel, axis=1)
    seq[:, t] = item
    score_at[:, t] = np.einsum("ud,ud->u", taste, emb[item])
    jump = rng.random(n_u) < cfg.jump_prob
    new_fav = centroids[fav[np.arange(n_u), rng.integers(0, n_fav)]]
    target = np.where(jump[:, None], new_fav, emb[item])
    rate = np.where(jump, 0.6, cfg.drift)[:, None]
    taste = (1 - rate) * taste + rate * target
    taste /= np.linalg.norm(taste, axis=1, keepdims=True)

  alive = np.arange(cfg.max_length)[None, :] < lengths[:, None]
  # Ratings 1..5: the taste score standardised over all consumed items, plus noise, rounded.
  mu, sd = score_at[alive].mean(), score_at[alive].std()
  z = (score_at - mu) / sd
  true_ratings = np.clip(3.5 + (start_taste @ emb.T - mu) / sd, 1, 5).astype(np.float32)
  ratings = np.clip(np.round(3.5 + z + cfg.rating_noise * rng.normal(size=z.shape)), 1, 5)
  start = rng.integers(0, 10 * cfg.max_length, size=n_u)
  times = start[:, None] + np.arange(cfg.max_length)[None, :]

  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  ds = Dataset(
      name="synthetic", scenario="music streaming", item_noun="song", behavior="listening",
      attribute_names=("title", "genre", "label"),
      item_text=item_text,
      item_keys=np.array([f"i{i}" for i in range(n_i)]),
      user_keys=np.array([f"u{u}" for u in range(n_u)]),
      seq_items=seq[alive].astype(np.int32), offsets=offsets,
      ratings=ratings[alive].astype(np.float32), times=times[alive].astype(np.int64),
      item_features=np.zeros((n_i, 0), np.float32), user_features=np.zeros((n_u, 0), np.float32))
  return ds, SyntheticTruth(item_genre=item_genre, item_emb=emb, user_taste=start_taste,
                            popularity=pop, ratings=true_ratings)


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> Dataset:
  """The synthetic Dataset for `cfg` (same cfg, same arrays, on any machine)."""
  return generate_with_truth(cfg)[0]
