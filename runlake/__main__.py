from runlake.cli import main

raise SystemExit(main())
