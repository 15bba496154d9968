"""The seed's dataset layout, scanned and checked:

    <images_dir>/{train,val,test,run}/<stem>.<jpg|png|...>
    <maps_dir>/<TASK>/<stem>.<png|jpg>          one folder per saliency task
    <fixations_dir>/<TASK>/<stem>.png           optional binary fixation maps

`data.task_images` says which images a task has:
- `all` (the default): every task has a map for every image; a missing map is an error that
  counts them and names the first few, never a silent skip;
- `own`: each task has the images it has maps for (datasets as tasks: `salicon` maps SALICON's
  images, `mit1003` MIT1003's); an image that no task maps is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hypersal.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAP_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test", "run")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _by_stem(folder: Path, suffixes=MAP_SUFFIXES) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            out.setdefault(p.stem, p)
    return out


@dataclass
class DatasetIndex:
    images_dir: Path
    maps_dir: Path | None
    tasks: list[str]
    images: dict[str, list[Path]] = field(default_factory=dict)      # split -> image files
    maps: dict[str, dict[str, Path]] = field(default_factory=dict)   # task -> stem -> file
    fixations: dict[str, dict[str, Path]] = field(default_factory=dict)
    task_images: str = "all"                                          # all | own (see above)

    def split(self, name: str, required: bool = True) -> list[Path]:
        files = self.images.get(name, [])
        if required and not files:
            raise UserError(f"no images in the '{name}' split", file=self.images_dir / name,
                            fix=f"put {', '.join(IMAGE_SUFFIXES)} files in {self.images_dir / name}")
        return files

    def images_for(self, split: str, tasks: list[str] | None) -> list[Path]:
        """The split's images that `tasks` use: all of them, or (task_images: own) those that
        one of the tasks has a map for, in the split's order."""
        images = self.split(split)
        if self.task_images == "all" or not tasks:
            return images
        used = {p for task in tasks for p in self.task_images_of(split, task)}   # each task has some
        return [p for p in images if p in used]

    def task_images_of(self, split: str, task: str) -> list[Path]:
        images = self.split(split)
        if self.task_images == "all":
            return images
        have = self.maps.get(task, {})
        mine = [p for p in images if p.stem in have]
        if not mine:
            raise UserError(f"no '{split}' image has a '{task}' map", file=self.maps_dir / task,
                            key="data.task_images", fix=f"give the task maps for some of {self.images_dir / split}, "
                                                        "or leave the task out (tasks:)")
        return mine

    def map_files(self, split: str, task: str) -> list[Path]:
        """The map of every image of the split that the task has (every image, unless
        task_images is `own`); every one must exist."""
        images = self.task_images_of(split, task)
        have = self.maps.get(task, {})
        missing = [p.stem for p in images if p.stem not in have]
        if missing:
            raise UserError(f"{len(missing)} of {len(images)} '{split}' images have no '{task}' map "
                            f"(first: {', '.join(missing[:3])})", file=self.maps_dir / task,
                            fix=f"add <stem>.png maps for them to {self.maps_dir / task}, or remove "
                                "those images; if each task has images of its own (datasets as tasks), "
                                "set data.task_images: own")
        return [have[p.stem] for p in images]

    def fixation_files(self, split: str, task: str) -> list[Path] | None:
        """Fixation maps of every image of the split, or None where the task has none."""
        have = self.fixations.get(task)
        if not have:
            return None
        images = self.task_images_of(split, task)
        missing = [p.stem for p in images if p.stem not in have]
        if missing:
            raise UserError(f"{len(missing)} '{split}' images have no '{task}' fixation map "
                            f"(first: {', '.join(missing[:3])})", file=Path(next(iter(have.values()))).parent,
                            fix="add them, or remove the task's fixation folder")
        return [have[p.stem] for p in images]


def scan(images_dir: Path | str, maps_dir: Path | str | None, tasks: list[str] | None = None,
         fixations_dir: Path | str | None = None, task_images: str = "all") -> DatasetIndex:
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError("the image folder does not exist", file=images_dir, key="data.images_dir",
                        fix="point data.images_dir at a folder holding train/ val/ (test/ run/)")
    index = DatasetIndex(images_dir, Path(maps_dir) if maps_dir else None, [], task_images=task_images)
    for split in SPLITS:
        if (images_dir / split).is_dir():
            index.images[split] = list_images(images_dir / split)
    if not index.images:
        raise UserError("no split folders (train/ val/ test/ run/) in the image folder", file=images_dir,
                        key="data.images_dir", fix="arrange the images as <images_dir>/train/*.jpg etc.")
    if index.maps_dir is not None:
        index.tasks = _tasks(index.maps_dir, tasks)
        index.maps = {t: _by_stem(index.maps_dir / t) for t in index.tasks}
    if fixations_dir:
        root = Path(fixations_dir)
        index.fixations = {t: _by_stem(root / t) for t in index.tasks if (root / t).is_dir()}
    if task_images == "own" and index.maps_dir is not None:
        _every_image_mapped(index)
    return index


def _every_image_mapped(index: DatasetIndex) -> None:
    """task_images: own: an image of train/val/test that no task folder maps is a mistake."""
    stems = set()
    for folder in (p for p in index.maps_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        stems.update(index.maps[folder.name] if folder.name in index.maps else _by_stem(folder))
    for split in ("train", "val", "test"):
        orphans = [p.name for p in index.images.get(split, []) if p.stem not in stems]
        if orphans:
            raise UserError(f"{len(orphans)} '{split}' images have no map of any task (first: {', '.join(orphans[:3])})",
                            file=index.images_dir / split, key="data.task_images",
                            fix=f"add their maps to a task folder of {index.maps_dir}, or move them out of {split}/")


def _tasks(maps_dir: Path, wanted: list[str] | None) -> list[str]:
    if not maps_dir.is_dir():
        raise UserError("the saliency map folder does not exist", file=maps_dir, key="data.maps_dir",
                        fix="point data.maps_dir at a folder with one subfolder per task")
    found = sorted(p.name for p in maps_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not wanted:
        if not found:
            raise UserError("no task folders in the saliency map folder", file=maps_dir,
                            key="data.maps_dir", fix="add one subfolder of maps per task")
        return found
    unknown = [t for t in wanted if t not in found]
    if unknown:
        raise UserError(f"no map folder for task(s) {', '.join(unknown)}", file=maps_dir, key="tasks",
                        fix=f"the tasks found are: {', '.join(found) or 'none'}")
    return list(wanted)
