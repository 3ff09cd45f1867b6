#!/usr/bin/env bash
# Orthanc (the PACS of tests/pacs) comes from .ci/apt-packages.txt: orthanc,
# orthanc-dicomweb, dcmtk.  The tests start their own Orthanc on free 127.0.0.1 ports;
# this only checks that the binary and the DICOMweb plugin are where the tests look.
set -euo pipefail
command -v Orthanc >/dev/null || test -x /usr/sbin/Orthanc || {
  echo "Orthanc missing: apt-get install orthanc orthanc-dicomweb" >&2; exit 1; }
test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so || {
  echo "Orthanc DICOMweb plugin missing: apt-get install orthanc-dicomweb" >&2; exit 1; }
/usr/sbin/Orthanc --version | sed -n 1p
