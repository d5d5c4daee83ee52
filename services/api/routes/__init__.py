"""One APIRouter per resource; each route only parses, queries or commands, answers."""
