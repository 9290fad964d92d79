echo "building the {{ TARGET }} report in $BLANKET_WORKING_DIR"
date > report.txt
