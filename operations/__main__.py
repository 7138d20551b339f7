from operations.cli import main

raise SystemExit(main())
