"""`unifier import`: a CSV file becomes `identity.import-rows` facts, the running
service applies them, and the importer reports created / updated / failed rows and
writes the failed ones to a CSV a person can fix and import again (I1–I17)."""
