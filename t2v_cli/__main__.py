import sys

from t2v_cli.main import main

sys.exit(main())
