"""``python -m voicenlu`` (what ``torchrun -m voicenlu train ...`` runs)."""

from voicenlu.cli import main

raise SystemExit(main())
