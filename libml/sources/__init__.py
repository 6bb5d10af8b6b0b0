"""Where scripts/create_datasets.py gets its images: one module per source, each reading its
publisher's exact format and writing record files under $ML_DATA.

  download   canonical archive names, URLs and MD5s; a missing archive downloaded and checked
  archives   reading downloaded (untrusted) files: tar members within their size limits, errors
             that name the file, CIFAR's pickles without running code
  output     record files written from chunks of images, and the lines that say what was written
  cifar, svhn, stl10, digits   the public datasets (digits ships inside scikit-learn)
  custom_folders, custom       the user's own folders of images

Every `create_*` function takes the data folder and returns the lines create_datasets.py prints.
Importing any of these modules reads nothing.
"""
