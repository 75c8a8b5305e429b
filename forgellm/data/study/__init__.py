"""`forge study`: the quality profile of a data file, its findings and HTML report."""
