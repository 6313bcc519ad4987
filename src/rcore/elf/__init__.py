"""ELF core files: binary layouts (structs), note encodings (notes, rcore_notes),
writing (writer) and reading (reader)."""
