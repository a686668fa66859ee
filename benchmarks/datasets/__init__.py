"""Reading the datasets: labels (by format), images on disk, splits -> experiences."""
