"""The log and how it is written: the Application, the fenced recorder, group commit, the
session an owner holds, snapshots, the database, the schema and every advisory lock."""
