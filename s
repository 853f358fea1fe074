c-
