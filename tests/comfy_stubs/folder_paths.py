"""Stand-in for ComfyUI's folder_paths: model folders as name -> ([paths], {extensions})."""

import os

models_dir = os.path.join(os.getcwd(), "models")  # tests point this at a temporary folder
folder_names_and_paths: dict = {}


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    paths, exts = folder_names_and_paths.setdefault(folder_name, ([], set()))
    if full_folder_path not in paths:
        paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)


def get_filename_list(folder_name):
    paths, exts = folder_names_and_paths[folder_name]
    names = set()
    for path in paths:
        if os.path.isdir(path):
            for name in os.listdir(path):
                if not exts or os.path.splitext(name)[1] in exts:
                    names.add(name)
    return sorted(names)


def get_full_path(folder_name, filename):
    for path in folder_names_and_paths.get(folder_name, ([], set()))[0]:
        full = os.path.join(path, filename)
        if os.path.isfile(full):
            return full
    return None


def get_full_path_or_raise(folder_name, filename):
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full
