from bluerocktel.cli import main

raise SystemExit(main())
