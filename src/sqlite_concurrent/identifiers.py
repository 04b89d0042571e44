"""SQL identifiers as text: a table or column name quoted so that any name, even one holding
double quotes or a keyword, reads back as itself."""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
