"""The chat's wire formats: each a blueprint factory over the one generation machinery
(``..service``), differing only in how requests are read and replies framed."""
