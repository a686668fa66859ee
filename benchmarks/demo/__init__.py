"""Demo data in the datasets' real formats (`iqacl demo-data`); no run imports these."""
