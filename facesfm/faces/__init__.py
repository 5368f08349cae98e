"""facesfm.faces"""
